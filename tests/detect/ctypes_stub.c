/* Empty: the ctypes module is libwsidetect.a linked whole. */
typedef int wsidet_ctypes_stub;
