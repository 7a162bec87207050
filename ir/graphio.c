#include "ir/graphio.h"

#include <stdlib.h>
#include <string.h>

#include "ir/dot.h"
#include "ir/text.h"
#include "ir/xml.h"

bool nc_graph_format_parse(const char *s, nc_graph_format *out) {
  if (!strcmp(s, "text")) *out = NC_FMT_TEXT;
  else if (!strcmp(s, "xml")) *out = NC_FMT_XML;
  else if (!strcmp(s, "dot")) *out = NC_FMT_DOT;
  else return false;
  return true;
}

nc_status nc_graph_load_mem(const char *src, size_t len, const char *name, nc_graph **out) {
  size_t i = 0;
  if (len >= 3 && (unsigned char)src[0] == 0xEF && (unsigned char)src[1] == 0xBB && (unsigned char)src[2] == 0xBF) i = 3;
  while (i < len && (src[i] == ' ' || src[i] == '\t' || src[i] == '\r' || src[i] == '\n')) i++;
  if (i < len && src[i] == '<') return nc_graph_parse_xml(src, len, name, out);
  return nc_graph_parse_text(src, len, name, out);
}

nc_status nc_graph_load(const char *path, nc_graph **out) {
  *out = NULL;
  char *src;
  size_t len;
  NC_TRY(nc_file_read(path, NC_GRAPH_FILE_MAX, &src, &len));
  nc_status st = nc_graph_load_mem(src, len, path, out);
  free(src);
  return st;
}

nc_status nc_graph_format_write(const nc_graph *g, nc_graph_format fmt, nc_buf *out) {
  switch (fmt) {
    case NC_FMT_TEXT: return nc_graph_print_text(g, out);
    case NC_FMT_XML: return nc_graph_write_xml(g, out);
    case NC_FMT_DOT: return nc_graph_write_dot(g, out);
  }
  return nc_errorf(NC_E_INVALID, "unknown graph format %d", (int)fmt);
}
