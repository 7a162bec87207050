// The versioned XML form of the IR (libxml2). Round-trips exactly like the
// text form. Schema and version in docs/ir-format.md.
#ifndef NC_IR_XML_H
#define NC_IR_XML_H

#include <stddef.h>

#include "ir/graph.h"
#include "support/buf.h"

#define NC_XML_VERSION 1

nc_status nc_graph_write_xml(const nc_graph *g, nc_buf *out);
// Parses XML; errors name filename:line (and the element/attribute at fault).
nc_status nc_graph_parse_xml(const char *src, size_t len, const char *filename, nc_graph **out);

#endif
