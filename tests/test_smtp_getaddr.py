"""The session's fast MAIL/RCPT path parser gives aiosmtpd's answers, for any argument."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smtp.session import Session


def parsers(limit: int) -> tuple[Session, SMTP]:
    # _getaddr reads only local_part_limit of the session: no connection is needed.
    ours, theirs = Session.__new__(Session), SMTP.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    return ours, theirs


CASES = [
    "<a@b.c>", "<a@b.c> SIZE=1", "<a@b.c>  SIZE=1", "<a@b.c>\tSIZE=1", "<a@b.c>SIZE=1",
    "<a@b.c> (x) SIZE=1", "<a@b.c> ", "<A.B+c@Sub.B-c.c>", "<a..b@c>", "<.a@b>", "<a.@b>",
    "<a@b..c>", "<a@b.c.>", "<a@-b.c>", "<a@[1.2.3.4]>", "<>", "< a@b.c >", "<a@b>",
    "<a@b.c> SIZE=1 BODY=8BITMIME", "<a@b.c> x(y)", "<a@b.c>>", '<"a b"@c.d>', "<@x,@y:a@b.c>",
    "a@b.c", "<a@b@c>", "<a(c)@b.c>", "<a@b.c> SIZE=1 ", "<a@b.c> =", "", " <a@b.c>",
    "<loadgen@alpha.test> SIZE=10402", "<bob@beta.test>", "<x" * 40 + "@b.c>",
]


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("arg", CASES)
def test_known_arguments(arg: str, limit: int) -> None:
    ours, theirs = parsers(limit)
    assert ours._getaddr(arg) == theirs._getaddr(arg)


def test_a_long_local_part_is_refused_both_ways() -> None:
    ours, theirs = parsers(64)
    arg = "<" + "a" * 65 + "@b.c>"
    assert ours._getaddr(arg) == theirs._getaddr(arg) == (None, None)


ATOM = st.text("abAZ09.-+_=!#'@<>() \t\"[]:,;\\", max_size=12)


@settings(max_examples=400, deadline=None)
@given(local=ATOM, domain=ATOM, rest=st.text("SIZE=19 BODY8()\t<>@", max_size=12),
       gap=st.sampled_from(["", " ", "  ", "\t"]), limit=st.sampled_from([0, 3]))
def test_any_argument(local: str, domain: str, rest: str, gap: str, limit: int) -> None:
    ours, theirs = parsers(limit)
    for arg in (f"<{local}@{domain}>{gap}{rest}", f"<{local}>{gap}{rest}", local + rest):
        assert outcome(ours, arg) == outcome(theirs, arg), arg


def outcome(parser: SMTP, arg: str) -> object:
    # aiosmtpd's parser crashes on some malformed input; ours calls that a malformed
    # address (test_arguments_that_crash_aiosmtpd_are_malformed).
    try:
        return parser._getaddr(arg)
    except Exception:  # compared: ours must give (None, None) for these
        return None, None


@pytest.mark.parametrize("arg", ["<", "<@", "<a@", '<"', "a@[", "a@[ "])
def test_arguments_that_crash_aiosmtpd_are_malformed(arg: str) -> None:
    ours, theirs = parsers(0)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any crash: that is the point
        theirs._getaddr(arg)
    assert ours._getaddr(arg) == (None, None)  # 553 5.1.3, not 451 and a traceback


WORD = st.text("abzAZ09-+_=!#'`{|}~/?^$%&*", min_size=0, max_size=5)
LABEL = st.text("abzAZ09-", min_size=0, max_size=6)


@settings(max_examples=400, deadline=None)
@given(local=st.lists(WORD, min_size=1, max_size=3), domain=st.lists(LABEL, min_size=1,
       max_size=3), params=st.lists(st.text("SIZE=0123456789BODY ", max_size=8), max_size=3),
       gap=st.sampled_from(["", " ", "  ", "\t"]), tail=st.sampled_from(["", " "]),
       limit=st.sampled_from([0, 3, 64]))
def test_everyday_arguments(local: list[str], domain: list[str], params: list[str], gap: str,
                            tail: str, limit: int) -> None:
    # Mostly the form the fast path takes, with its edges: empty atoms, spacing.
    ours, theirs = parsers(limit)
    arg = f"<{'.'.join(local)}@{'.'.join(domain)}>{gap}{' '.join(params)}{tail}"
    assert outcome(ours, arg) == outcome(theirs, arg)
