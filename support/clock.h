// The monotonic clock in seconds, shared by every layer (timings, progress, budgets).
#ifndef NC_SUPPORT_CLOCK_H
#define NC_SUPPORT_CLOCK_H

// Seconds on CLOCK_MONOTONIC (an arbitrary origin: for differences only).
double nc_clock_now(void);

#endif
