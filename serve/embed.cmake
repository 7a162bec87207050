# Turns a file into a C array: cmake -DIN=ui.html -DOUT=ui_html.c -DNAME=nc_serve_ui_html -P embed.cmake
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" nhex)
math(EXPR n "${nhex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){24})" "\\1\n  " body "${body}")
file(WRITE ${OUT}.tmp "// Generated from ${IN} by serve/embed.cmake; do not edit.\n#include <stddef.h>\n"
     "const char ${NAME}[] = {\n  ${body}0x00};\nconst size_t ${NAME}_len = ${n};\n")
file(RENAME ${OUT}.tmp ${OUT})
