# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native MIME scanner: header split, Content-Type parameters, the multipart tree.

The specification is gateway/mime/_scan_py.py: same algorithm step for step, same
results, same errors (the types and MimeError are imported from it), only faster.
Delimiters are found with memmem and line ends with memchr, so each level of the tree
reads its region once (RFC 2046 §5.1.1; RFC 5322 §2.2 for the header fields).
"""

from libc.stdlib cimport malloc, free, realloc
from libc.string cimport memchr
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF

cdef extern from "string.h":
    void* memmem(const void* haystack, size_t hn, const void* needle, size_t nn) nogil

cdef extern from "strings.h":
    int strncasecmp(const char* a, const char* b, size_t n) nogil

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)
    object PyLong_FromSsize_t(Py_ssize_t v)

from gateway.mime._scan_py import DEFAULT_LIMITS, Defect, MimeError, Part, ScannedMessage
from gateway.mime.rfc2231 import combine

_new = tuple.__new__  # the NamedTuple results, built without their Python-level __new__

cdef unsigned char TOKEN[256]      # RFC 2045 §5.1 token octets
cdef unsigned char NAMECH[256]     # header field name octets (RFC 5322 §3.6.8)
cdef unsigned char VALSTOP[256]    # octets that end an unquoted parameter value
cdef unsigned char CFWS[256]       # SP, HTAB, CR, LF


cdef void _init_tables() noexcept:
    cdef int c
    cdef bytes specials = b'()<>@,;:\\"/[]?='
    for c in range(256):
        TOKEN[c] = 1 if (33 <= c <= 126 and c not in specials) else 0
        NAMECH[c] = 1 if (33 <= c <= 126 and c != 58) else 0
        VALSTOP[c] = 1 if c in b';"( \t\r\n' else 0
        CFWS[c] = 1 if c in b" \t\r\n" else 0


_init_tables()

cdef enum:
    MAX_BOUNDARY = 200  # RFC 2046 says 70; longer ones occur, absurd ones are refused


cdef inline str _lower_ascii(const unsigned char* p, Py_ssize_t n):
    """Token octets (printable ASCII) as a lower-case str, built in place."""
    cdef object out = PyUnicode_New(n, 127)
    cdef unsigned char* d = <unsigned char*> PyUnicode_DATA(out)
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        d[i] = c + 32 if 65 <= c <= 90 else c
    return <str> out


cdef inline str _ctype_str(const unsigned char* t, Py_ssize_t tn,
                           const unsigned char* st, Py_ssize_t sn):
    cdef object out = PyUnicode_New(tn + 1 + sn, 127)
    cdef unsigned char* d = <unsigned char*> PyUnicode_DATA(out)
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(tn):
        c = t[i]
        d[i] = c + 32 if 65 <= c <= 90 else c
    d[tn] = 47
    for i in range(sn):
        c = st[i]
        d[tn + 1 + i] = c + 32 if 65 <= c <= 90 else c
    return <str> out


cdef inline str _utf8(const unsigned char* p, Py_ssize_t n):
    return <str> PyUnicode_DecodeUTF8(<const char*> p, n, "surrogateescape")


cdef Py_ssize_t _skip_cfws(const unsigned char* s, Py_ssize_t i, Py_ssize_t end) noexcept:
    cdef int depth
    cdef unsigned char c
    while i < end:
        c = s[i]
        if CFWS[c]:
            i += 1
        elif c == 40:
            depth = 0
            while i < end:
                c = s[i]
                if c == 92:
                    i += 2
                    continue
                if c == 40:
                    depth += 1
                elif c == 41:
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i = i + 1 if i + 1 < end else end
        else:
            break
    return i


cdef tuple _params(const unsigned char* s, Py_ssize_t i, Py_ssize_t end):
    cdef list out = []
    cdef bint starred = False
    cdef Py_ssize_t a, v, k
    cdef unsigned char c
    cdef unsigned char* buf
    cdef const void* semi
    cdef str name, text
    while True:
        i = _skip_cfws(s, i, end)
        if i >= end:
            break
        if s[i] != 59:
            semi = memchr(s + i, 59, end - i)
            if semi == NULL:
                break
            i = <const unsigned char*> semi - s
        i = _skip_cfws(s, i + 1, end)
        a = i
        while i < end and TOKEN[s[i]]:
            i += 1
        if i == a:
            continue
        name = _lower_ascii(s + a, i - a)
        i = _skip_cfws(s, i, end)
        if i >= end or s[i] != 61:
            continue
        i = _skip_cfws(s, i + 1, end)
        if i < end and s[i] == 34:
            i += 1
            buf = <unsigned char*> malloc(end - i + 1)
            if buf == NULL:
                raise MemoryError()
            k = 0
            while i < end:
                c = s[i]
                if c == 34:
                    i += 1
                    break
                if c == 92 and i + 1 < end:
                    buf[k] = s[i + 1]
                    k += 1
                    i += 2
                    continue
                if c != 13 and c != 10:
                    buf[k] = c
                    k += 1
                i += 1
            try:
                text = _utf8(buf, k)
            finally:
                free(buf)
        else:
            v = i
            while i < end and not VALSTOP[s[i]]:
                i += 1
            text = _utf8(s + v, i - v)
        if not starred and memchr(s + a, 42, len(name)) != NULL:
            starred = True
        out.append((name, text))
    return combine(out) if starred else tuple(out)


cdef class _Scanner:
    cdef bytes data
    cdef const unsigned char* s
    cdef Py_ssize_t max_header_bytes, max_header_count, max_depth, max_parts
    cdef Py_ssize_t parts
    cdef list defects
    cdef list boundaries
    cdef Py_ssize_t* fbuf
    cdef Py_ssize_t fcap
    # results of the last header_block(), read before anything recurses
    cdef Py_ssize_t h_end, b_start, ct_at, ct_end, cte_at, cte_end, d_at, d_end

    def __cinit__(self):
        self.fbuf = NULL
        self.fcap = 0

    def __dealloc__(self):
        if self.fbuf != NULL:
            free(self.fbuf)

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self.fcap * 2 if self.fcap else 96
        cdef Py_ssize_t* nb = <Py_ssize_t*> realloc(self.fbuf, cap * sizeof(Py_ssize_t))
        if nb == NULL:
            raise MemoryError()
        self.fbuf = nb
        self.fcap = cap
        return 0

    cdef object entity(self, Py_ssize_t start, Py_ssize_t end, tuple path,
                       str default_type, int depth):
        self.parts += 1
        if self.parts > self.max_parts:
            raise MimeError("5.3.4", f"more than {self.max_parts} MIME parts", start)
        if depth > self.max_depth:
            raise MimeError("5.6.0", f"MIME nesting deeper than {self.max_depth}", start)
        cdef tuple fields = self.header_block(start, end)
        cdef Py_ssize_t header_end = self.h_end, body_start = self.b_start
        cdef str ctype, cte, disposition
        cdef tuple params, disp_params
        ctype, params, cte, disposition, disp_params = self.content_fields(default_type)
        cdef tuple children = ()
        cdef bint opaque = cte == "7bit" or cte == "8bit" or cte == "binary"
        if ctype.startswith("multipart/"):
            if not opaque:
                self.defects.append(
                    Defect(start, "multipart entity with a transfer encoding (RFC 2045 §6.4)"))
            children = self.multipart(body_start, end, path, ctype, params, depth)
        elif ctype == "message/rfc822" or ctype == "message/global":
            if opaque:
                children = (self.entity(body_start, end, path + (0,), "text/plain",
                                        depth + 1),)
            else:
                self.defects.append(
                    Defect(start, "encoded message/rfc822 is not scanned inside"))
        return _new(Part, (self.data, path, start, header_end, body_start, end, fields, ctype,
                           params, cte, disposition, disp_params, children))

    cdef tuple header_block(self, Py_ssize_t start, Py_ssize_t end):
        """The fields tuple; header_end, body_start and the spans of Content-Type,
        -Transfer-Encoding and -Disposition are left in h_end, b_start, ct_*, cte_*, d_*."""
        cdef const unsigned char* s = self.s
        cdef Py_ssize_t pos, colon, j, fend, nxt, name_len, header_end, body_start, i
        cdef Py_ssize_t nf = 0
        cdef Py_ssize_t ctype_at = -1, cte_at = -1, disp_at = -1
        cdef Py_ssize_t ctype_end = 0, cte_end = 0, disp_end = 0
        cdef const unsigned char* lf
        cdef const void* nul
        cdef unsigned char c
        pos = start
        while True:
            if pos >= end:
                header_end = end
                body_start = end
                break
            c = s[pos]
            if c == 10:
                header_end = pos
                body_start = pos + 1
                break
            if c == 13 and pos + 1 < end and s[pos + 1] == 10:
                header_end = pos
                body_start = pos + 2
                break
            colon = pos
            while colon < end and NAMECH[s[colon]]:
                colon += 1
            if colon == pos or colon >= end or s[colon] != 58:
                self.defects.append(
                    Defect(pos, "header line is not a field; the body starts there"))
                header_end = pos
                body_start = pos
                break
            j = colon + 1
            while True:
                lf = <const unsigned char*> memchr(s + j, 10, end - j) if j < end else NULL
                if lf == NULL:
                    fend = end
                    nxt = end
                    break
                nxt = (lf - s) + 1
                if nxt < end and (s[nxt] == 32 or s[nxt] == 9):
                    j = nxt
                    continue
                fend = nxt - 2 if s[nxt - 2] == 13 else nxt - 1
                break
            if nxt - start > self.max_header_bytes:
                raise MimeError("5.3.4",
                                f"header block longer than {self.max_header_bytes} octets",
                                start)
            if nf >= 3 * self.max_header_count:
                raise MimeError("5.3.4", f"more than {self.max_header_count} header fields",
                                pos)
            if fend > pos:
                nul = memchr(s + pos, 0, fend - pos)
                if nul != NULL:
                    raise MimeError("5.6.0", "NUL octet in a header field",
                                    <const unsigned char*> nul - s)
            if nf + 3 > self.fcap:
                self._grow()
            self.fbuf[nf] = pos
            self.fbuf[nf + 1] = colon
            self.fbuf[nf + 2] = fend
            nf += 3
            name_len = colon - pos
            if name_len == 12 and strncasecmp(<const char*> s + pos, "content-type", 12) == 0:
                if ctype_at >= 0:
                    raise MimeError("5.6.0", "two Content-Type fields in one entity", pos)
                ctype_at = colon + 1
                ctype_end = fend
            elif name_len == 25 and strncasecmp(<const char*> s + pos,
                                                "content-transfer-encoding", 25) == 0:
                if cte_at >= 0:
                    raise MimeError("5.6.0",
                                    "two Content-Transfer-Encoding fields in one entity", pos)
                cte_at = colon + 1
                cte_end = fend
            elif name_len == 19 and strncasecmp(<const char*> s + pos,
                                                "content-disposition", 19) == 0:
                if disp_at < 0:
                    disp_at = colon + 1
                    disp_end = fend
            pos = nxt

        cdef tuple fields = PyTuple_New(nf)
        cdef object num
        for i in range(nf):
            num = PyLong_FromSsize_t(self.fbuf[i])
            Py_INCREF(num)
            PyTuple_SET_ITEM(fields, i, num)

        self.h_end = header_end
        self.b_start = body_start
        self.ct_at = ctype_at
        self.ct_end = ctype_end
        self.cte_at = cte_at
        self.cte_end = cte_end
        self.d_at = disp_at
        self.d_end = disp_end
        return fields

    cdef tuple content_fields(self, str default_type):
        """(content type, its params, transfer encoding, disposition, its params)."""
        cdef const unsigned char* s = self.s
        cdef Py_ssize_t ctype_at = self.ct_at, ctype_end = self.ct_end
        cdef Py_ssize_t cte_at = self.cte_at, cte_end = self.cte_end
        cdef Py_ssize_t disp_at = self.d_at, disp_end = self.d_end
        cdef Py_ssize_t i, k
        cdef str ctype = default_type
        cdef tuple params = ()
        cdef Py_ssize_t t, type_end, st
        if ctype_at >= 0:
            i = _skip_cfws(s, ctype_at, ctype_end)
            t = i
            while i < ctype_end and TOKEN[s[i]]:
                i += 1
            type_end = i
            i = _skip_cfws(s, i, ctype_end)
            if type_end == t or i >= ctype_end or s[i] != 47:
                ctype = None
            else:
                i = _skip_cfws(s, i + 1, ctype_end)
                st = i
                while i < ctype_end and TOKEN[s[i]]:
                    i += 1
                if i == st:
                    ctype = None
                else:
                    ctype = _ctype_str(s + t, type_end - t, s + st, i - st)
                    params = _params(s, i, ctype_end)
            if ctype is None:
                self.defects.append(
                    Defect(ctype_at, "invalid Content-Type; read as text/plain"))
                ctype = "text/plain"
        cdef str cte = "7bit"
        if cte_at >= 0:
            i = _skip_cfws(s, cte_at, cte_end)
            k = i
            while k < cte_end and TOKEN[s[k]]:
                k += 1
            if k > i:
                cte = _lower_ascii(s + i, k - i)
        cdef str disposition = ""
        cdef tuple disp_params = ()
        if disp_at >= 0:
            i = _skip_cfws(s, disp_at, disp_end)
            k = i
            while k < disp_end and TOKEN[s[k]]:
                k += 1
            disposition = _lower_ascii(s + i, k - i)
            disp_params = _params(s, k, disp_end)

        return ctype, params, cte, disposition, disp_params

    cdef Py_ssize_t delimiter(self, const unsigned char* dash, Py_ssize_t dn,
                              Py_ssize_t region, Py_ssize_t pos, Py_ssize_t end,
                              bint* close, Py_ssize_t* after) noexcept:
        """Offset of the next delimiter line's "--" at or after pos, or -1."""
        cdef const unsigned char* s = self.s
        cdef const void* p
        cdef Py_ssize_t at, k
        cdef bint cl
        while True:
            if end - pos < dn:
                return -1
            p = memmem(s + pos, end - pos, dash, dn)
            if p == NULL:
                return -1
            at = <const unsigned char*> p - s
            pos = at + 1
            if at != region and s[at - 1] != 10:
                continue
            k = at + dn
            cl = k + 1 < end and s[k] == 45 and s[k + 1] == 45
            if cl:
                k += 2
            while k < end and (s[k] == 32 or s[k] == 9):
                k += 1
            if k >= end:
                close[0] = cl
                after[0] = end
                return at
            if s[k] == 10:
                close[0] = cl
                after[0] = k + 1
                return at
            if s[k] == 13 and k + 1 < end and s[k + 1] == 10:
                close[0] = cl
                after[0] = k + 2
                return at

    cdef tuple multipart(self, Py_ssize_t start, Py_ssize_t end, tuple path, str ctype,
                         tuple params, int depth):
        cdef object boundary = None
        cdef str name
        for name, value in params:
            if name == "boundary":
                if boundary is not None:
                    raise MimeError("5.6.0", f"two boundary parameters in {ctype}", start)
                boundary = value
        if not boundary:
            raise MimeError("5.6.0", f"{ctype} without a boundary parameter", start)
        cdef bytes dash = b"--" + (<str> boundary).encode("utf-8", "surrogateescape")
        cdef Py_ssize_t dn = PyBytes_GET_SIZE(dash)
        if dn > MAX_BOUNDARY + 2:
            raise MimeError("5.6.0", f"boundary longer than {MAX_BOUNDARY} octets", start)
        cdef const unsigned char* d = <const unsigned char*> PyBytes_AS_STRING(dash)
        if dash in self.boundaries:
            raise MimeError("5.6.0", "a nested multipart reuses an outer boundary", start)
        cdef str default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        cdef bint close = False
        cdef Py_ssize_t after = 0, at, part_start, part_end
        at = self.delimiter(d, dn, start, start, end, &close, &after)
        if at < 0:
            raise MimeError("5.6.0", f"no delimiter line for the boundary of {ctype}", start)
        if close:
            raise MimeError("5.6.0", f"{ctype} has no body part", at)
        self.boundaries.append(dash)
        cdef list children = []
        part_start = after
        while True:
            at = self.delimiter(d, dn, start, part_start, end, &close, &after)
            if at < 0:
                self.defects.append(Defect(end, f"{ctype} lacks its close delimiter"))
                part_end = end
                if part_end > part_start and self.s[part_end - 1] == 10:
                    part_end -= 1
                    if part_end > part_start and self.s[part_end - 1] == 13:
                        part_end -= 1
            else:
                part_end = at
                if at > part_start:
                    part_end = at - 2 if at - 2 >= part_start and self.s[at - 2] == 13 else at - 1
            children.append(self.entity(part_start, part_end, path + (len(children),),
                                        default, depth + 1))
            if at < 0 or close:
                self.boundaries.pop()
                return tuple(children)
            part_start = after


def scan(bytes data not None, *, limits=DEFAULT_LIMITS):
    """The entity tree of a message, or MimeError (see gateway.mime._scan_py.scan)."""
    cdef _Scanner sc = _Scanner.__new__(_Scanner)
    sc.data = data
    sc.s = <const unsigned char*> PyBytes_AS_STRING(data)
    sc.max_header_bytes = limits.max_header_bytes
    sc.max_header_count = limits.max_header_count
    sc.max_depth = limits.max_depth
    sc.max_parts = limits.max_parts
    sc.parts = 0
    sc.defects = []
    sc.boundaries = []
    root = sc.entity(0, PyBytes_GET_SIZE(data), (), "text/plain", 0)
    return _new(ScannedMessage, (data, root, tuple(sc.defects)))
