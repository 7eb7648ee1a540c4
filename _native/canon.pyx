# cython: language_level=3
"""Native CRLF canonicalisation and content facts for signing.

The specification is gateway/mime/_canon_py.py: same results, same types, only faster.
"""

from libc.string cimport memchr, memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from gateway.mime._canon_py import ContentFacts


def canonicalize(bytes data not None):
    cdef const unsigned char* src = <const unsigned char*> PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t i, bare = 0
    cdef const unsigned char* p = src
    cdef const unsigned char* end = src + n
    cdef const unsigned char* lf
    # First pass: count bare LFs so the output is allocated once.
    while p < end:
        lf = <const unsigned char*> memchr(p, 10, end - p)
        if lf == NULL:
            break
        if lf == src or lf[-1] != 13:
            bare += 1
        p = lf + 1
    if bare == 0:
        return data
    out = PyBytes_FromStringAndSize(NULL, n + bare)
    cdef unsigned char* dst = <unsigned char*> PyBytes_AS_STRING(out)
    p = src
    cdef Py_ssize_t chunk
    while p < end:
        lf = <const unsigned char*> memchr(p, 10, end - p)
        if lf == NULL:
            memcpy(dst, p, end - p)
            dst += end - p
            break
        chunk = lf - p
        memcpy(dst, p, chunk)
        dst += chunk
        if lf == src or lf[-1] != 13:
            dst[0] = 13
            dst += 1
        dst[0] = 10
        dst += 1
        p = lf + 1
    return out


def content_facts(bytes data not None):
    cdef const unsigned char* s = <const unsigned char*> PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t i = 0, line_start = 0, line_len, max_len = 0
    cdef bint has_8bit = False, has_nul = False, bare_lf = False, bare_cr = False
    cdef bint trailing = False, from_line = False
    cdef unsigned char c, last
    while i <= n:
        if i == n or s[i] == 10:
            line_len = i - line_start
            if i < n:
                if line_len > 0 and s[i - 1] == 13:
                    line_len -= 1
                else:
                    bare_lf = True
            if line_len > max_len:
                max_len = line_len
            if line_len > 0:
                last = s[line_start + line_len - 1]
                if last == 32 or last == 9:
                    trailing = True
                if (line_len >= 5 and s[line_start] == 70 and s[line_start + 1] == 114
                        and s[line_start + 2] == 111 and s[line_start + 3] == 109
                        and s[line_start + 4] == 32):
                    from_line = True
            # a CR inside the line (not the one before LF) is a bare CR
            for j in range(line_start, line_start + line_len):
                if s[j] == 13:
                    bare_cr = True
            line_start = i + 1
            i += 1
            continue
        c = s[i]
        if c >= 0x80:
            has_8bit = True
        elif c == 0:
            has_nul = True
        i += 1
    return ContentFacts(
        has_8bit=has_8bit,
        has_nul=has_nul,
        has_bare_lf=bare_lf,
        has_bare_cr=bare_cr,
        max_line_length=max_len,
        trailing_whitespace=trailing,
        from_line=from_line,
    )
