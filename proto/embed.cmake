# Turns a binary file IN into a C source OUT defining
#   const unsigned char ctxd_descriptor_set[]; const size_t ctxd_descriptor_set_len;
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* generated from the descriptor set by proto/embed.cmake */\n#include <stddef.h>\nconst unsigned char ctxd_descriptor_set[] = {\n${body}\n};\nconst size_t ctxd_descriptor_set_len = ${len};\n")
