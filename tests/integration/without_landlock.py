"""``python without_landlock.py COMMAND...``: run COMMAND on a host that has no Landlock.

A seccomp filter makes the three Landlock system calls fail with ``ENOSYS``, as they do on a
kernel built without Landlock or under a container runtime whose seccomp profile blocks them.
The filter is inherited by everything COMMAND starts, so a service started this way meets the
case its fail-closed rules are for. x86-64 and AArch64, where the Landlock calls are 444–446.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_LANDLOCK_CALLS = (444, 445, 446)


def _instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def block_landlock() -> None:
    ld_abs, jeq, ret = 0x20, 0x15, 0x06
    allow, enosys = 0x7FFF0000, 0x00050000 | errno.ENOSYS
    program = [
        _instruction(ld_abs, 4),
        _instruction(jeq, _AUDIT_ARCH[platform.machine()], jf=len(_LANDLOCK_CALLS) * 2 + 1),
    ]
    program.append(_instruction(ld_abs, 0))
    for number in _LANDLOCK_CALLS:
        program += [_instruction(jeq, number, jf=1), _instruction(ret, enosys)]
    program.append(_instruction(ret, allow))
    code = b"".join(program)
    filters = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(program), ctypes.addressof(filters)), 16)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, ctypes.c_ulong(2), fprog, ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    block_landlock()
    os.execv(sys.argv[1], sys.argv[1:])
