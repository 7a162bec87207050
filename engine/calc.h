// nanochat's calculator tool, evaluated by our own recursive-descent parser
// (no interpreter process). The rules of nanochat's use_calculator: commas
// are stripped; then either pure arithmetic (digits, + - * / ( ) . and
// spaces; ** refused) or a string .count() expression ('strawberry'.count('r'):
// letters, digits, quotes, ( ) . _ and spaces, no dangerous words). Values
// follow Python: ints (64-bit here: overflow is an error where Python would
// grow), floats, / is true division, // floor division; the result is
// printed as Python's str() does (repr of floats: shortest round trip).
#ifndef NC_ENGINE_CALC_H
#define NC_ENGINE_CALC_H

#include <stddef.h>

#include "support/buf.h"
#include "support/status.h"

// Evaluates expr (n bytes) and appends str(result) to out. Errors (a refused
// or malformed expression, division by zero, overflow, nesting deeper than
// 100) say what is wrong and append nothing.
nc_status nc_calc_eval(const char *expr, size_t n, nc_buf *out);

#endif
