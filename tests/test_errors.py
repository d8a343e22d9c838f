"""The one exception for a user's mistake and the one line an error is quoted in
(``errors.py``)."""

from __future__ import annotations

from altgrad_triton.errors import UserError, one_line


def test_a_user_error_exits_2_as_an_error_unless_it_says_otherwise():
    plain = UserError("optim.lr: must be > 0, got -1")
    assert (plain.exit_code, plain.label) == (2, "error")
    assert str(plain) == "optim.lr: must be > 0, got -1"
    stopped = UserError("interrupted after epoch 2; saved", exit_code=130, label="stopped")
    assert (stopped.exit_code, stopped.label) == (130, "stopped")
    assert (UserError.exit_code, UserError.label) == (2, "error")  # the class is untouched

    class DiskFull(UserError):
        exit_code = 1

    assert DiskFull("no space").exit_code == 1 and DiskFull("x", exit_code=3).exit_code == 3


def test_one_line_is_the_first_line_collapsed_and_typed():
    error = ValueError("first   line\twith  gaps\nsecond line\nthird")
    assert one_line(error) == "ValueError: first line with gaps"
    assert one_line(error, typed=False) == "first line with gaps"
    assert one_line(RuntimeError()) == "RuntimeError"  # no message: the type
    assert one_line("  a message  \n given as text") == "a message"


def test_one_line_is_cut_to_its_limit():
    error = OSError("x" * 200)
    cut = one_line(error, limit=20, typed=False)
    assert cut == "x" * 17 + "..." and len(cut) == 20
    assert one_line(error, limit=None, typed=False) == "x" * 200
    assert len(one_line(error)) == len("OSError: ") + 160


def test_one_line_drops_what_torch_distributed_wraps_an_error_in():
    wrapped = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Got the following error when "
        "running the callback: RuntimeError: Connection closed by peer [127.0.0.1]:5678"
    )
    assert one_line(wrapped) == "RuntimeError: Connection closed by peer [127.0.0.1]:5678"
