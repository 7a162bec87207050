// Keeps nc_testsupport non-empty before helpers exist.
typedef int nc_testsupport_empty;
