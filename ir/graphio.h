// Reading and writing graphs as files, in any of the IR's forms.
#ifndef NC_IR_GRAPHIO_H
#define NC_IR_GRAPHIO_H

#include "ir/graph.h"
#include "support/buf.h"

typedef enum { NC_FMT_TEXT, NC_FMT_XML, NC_FMT_DOT } nc_graph_format;

#define NC_GRAPH_FILE_MAX ((size_t)256 << 20)  // 256 MiB

// Parses a name ("text", "xml", "dot"); false if unknown.
bool nc_graph_format_parse(const char *s, nc_graph_format *out);
// Reads a text or XML graph file (XML if the first non-blank byte is '<').
nc_status nc_graph_load(const char *path, nc_graph **out);
// Same on a buffer; `name` is used in error messages.
nc_status nc_graph_load_mem(const char *src, size_t len, const char *name, nc_graph **out);
// Appends g in the given format.
nc_status nc_graph_format_write(const nc_graph *g, nc_graph_format fmt, nc_buf *out);

#endif
