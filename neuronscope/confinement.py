"""Confinement of a process that opens an uploaded model: the kernel's own mechanisms, no helper binary.

A process calls :func:`confine` once, single-threaded, before it opens the model. From then on,
for it and everything it starts:

* **Landlock** (``landlock_restrict_self``): it reads and executes only under the given read
  roots (the Python runtime, installed packages, system libraries, a few ``/proc`` and ``/sys``
  entries) and reads and writes only under its write roots (its private job directory). The data
  directory, other jobs' files, the home directory and ``/etc`` are out of reach, root or not:
  Landlock restricts root too. On ABI 4+ TCP bind/connect are refused, on ABI 6+ signals to and
  abstract sockets of processes outside the domain.
* **A network namespace** (``unshare(CLONE_NEWNET)``, in a new user namespace when not root),
  where it can: no interface but a down loopback.
* **No capabilities** (bounding set and effective, permitted, inheritable sets emptied) and
  ``no_new_privs``.
* **seccomp**: ``socket()`` fails (no network and no Unix-socket path to a local daemon, whatever
  the kernel's Landlock ABI), and so do the calls that could leave or widen the confinement or
  reach the kernel's more exposed surface (``ptrace``, ``process_vm_*``, ``mount``, ``unshare``,
  ``setns``, ``bpf``, ``perf_event_open``, ``io_uring_*``, ``keyctl``, module and kexec calls …).

Landlock and seccomp are required (:class:`ConfinementUnavailable` otherwise); the namespace is
defence in depth. :func:`probe` confines a throw-away child process and reports what held, so the
API and the workers can say which confinement is active and refuse PyTorch-format models (code)
where none is (``python -m neuronscope.confinement`` prints it).

Linux only; x86-64 and AArch64. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# --- Landlock (include/uapi/linux/landlock.h) -------------------------------------------------

_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1

_FS_ABI1 = (1 << 13) - 1
_FS_BY_ABI = {1: _FS_ABI1, 2: _FS_ABI1 | _FS_REFER, 3: _FS_ABI1 | _FS_REFER | _FS_TRUNCATE}
_FS_ALL_ABI5 = _FS_ABI1 | _FS_REFER | _FS_TRUNCATE | _FS_IOCTL_DEV
#: Rights that make sense on a file (the kernel refuses directory rights in a rule for a file).
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR

# --- prctl, capabilities, namespaces, seccomp -------------------------------------------------

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06


@dataclass(frozen=True)
class _Arch:
    audit: int
    socket: int
    clone: int
    clone3: int
    capset: int
    unshare: int
    denied: tuple[int, ...]
    x32_bit: int = 0


# ptrace, process_vm_readv/writev, mount, umount2, pivot_root, chroot, setns, bpf,
# perf_event_open, keyctl, add_key, request_key, kexec_load, kexec_file_load, init_module,
# finit_module, delete_module, userfaultfd, io_uring_setup/enter/register, open_by_handle_at,
# name_to_handle_at, swapon, swapoff, reboot, acct, syslog, quotactl, fanotify_init, mount API
# (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr)
_X86_64 = _Arch(
    audit=0xC000003E,
    socket=41,
    clone=56,
    clone3=435,
    capset=126,
    unshare=272,
    denied=(101, 310, 311, 165, 166, 155, 161, 308, 321, 298, 250, 248, 249, 246, 320, 175, 313, 176,
            323, 425, 426, 427, 304, 303, 167, 168, 169, 163, 103, 179, 300,
            428, 429, 430, 431, 432, 433, 442),
    x32_bit=0x40000000,
)  # fmt: skip
_AARCH64 = _Arch(
    audit=0xC00000B7,
    socket=198,
    clone=220,
    clone3=435,
    capset=91,
    unshare=97,
    denied=(117, 270, 271, 40, 39, 41, 51, 268, 280, 241, 219, 217, 218, 104, 294, 105, 273, 106,
            282, 425, 426, 427, 265, 264, 224, 225, 142, 89, 116, 60, 262,
            428, 429, 430, 431, 432, 433, 442),
)  # fmt: skip
_ARCHES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}


class ConfinementUnavailable(RuntimeError):
    """This host cannot confine a process as required (no Landlock or no seccomp, or not Linux)."""


@dataclass(frozen=True)
class ConfinementReport:
    """What :func:`confine` put in place."""

    landlock_abi: int
    seccomp: bool
    network_namespace: bool
    capabilities_dropped: bool

    @property
    def active(self) -> bool:
        """Files and network both confined: enough to open a model that is code."""
        return self.landlock_abi > 0 and self.seccomp

    def describe(self) -> str:
        parts = [f"landlock-abi{self.landlock_abi}" if self.landlock_abi else "no-landlock"]
        parts.append("seccomp" if self.seccomp else "no-seccomp")
        if self.network_namespace:
            parts.append("netns")
        if self.capabilities_dropped:
            parts.append("no-caps")
        return "+".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "active": self.active,
            "mechanism": self.describe(),
            "landlock_abi": self.landlock_abi,
            "seccomp": self.seccomp,
            "network_namespace": self.network_namespace,
            "capabilities_dropped": self.capabilities_dropped,
        }


@dataclass(frozen=True)
class Paths:
    """The file-system view of a confined process: what it may read, and read and write."""

    read: tuple[Path, ...]
    write: tuple[Path, ...]
    read_write_files: tuple[Path, ...] = field(default=())


# --- helpers ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: object) -> int:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    result = int(libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _prctl(option: int, arg2: int = 0) -> None:
    libc = _libc()
    if libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return _syscall(
            _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION
        )
    except OSError:
        return 0


def _arch() -> _Arch | None:
    return _ARCHES.get(platform.machine().lower())


# --- the file-system view ---------------------------------------------------------------------

#: System locations a Python process with numpy, torch and onnxruntime reads.
_SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/self",
    "/proc/driver/nvidia",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    "/sys/fs/cgroup",
    "/sys/bus/pci",
    "/sys/devices/pci0000:00",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
)
_DEVICE_READ_WRITE = ("/dev/null", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def python_read_roots(modules: Iterable[str] = ("neuronscope", "worker")) -> list[Path]:
    """The Python runtime and its packages: the interpreter's prefixes, ``site-packages`` and the
    directories of ``modules`` (so an editable install exposes its packages, not its checkout)."""
    import importlib.util
    import site

    roots = {Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    with contextlib.suppress(AttributeError):
        roots.update(Path(p) for p in site.getsitepackages())
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.update(Path(p) for p in spec.submodule_search_locations)
    return sorted(roots)


def default_paths(write: Sequence[Path], extra_read: Sequence[Path] = ()) -> Paths:
    """The view of an analysis process whose private directories are ``write``."""
    read = [Path(p) for p in _SYSTEM_READ] + python_read_roots() + [Path(p) for p in extra_read]
    devices = [Path(p) for p in _DEVICE_READ_WRITE]
    with contextlib.suppress(OSError):
        devices += [Path("/dev") / name for name in os.listdir("/dev") if name.startswith("nvidia")]
    return Paths(read=tuple(read), write=tuple(Path(p) for p in write), read_write_files=tuple(devices))


def exposing_root(paths: Paths, secret: Path) -> Path | None:
    """The read or write root through which a confined process would see ``secret`` (a directory
    it must not see: the data directory, say), or ``None``."""
    secret = secret.resolve()
    for root in (*paths.read, *paths.write):
        resolved = root.resolve()
        if resolved == secret or resolved in secret.parents or secret in resolved.parents:
            return root
    return None


# --- the steps ----------------------------------------------------------------------------------


def _landlock(paths: Paths, abi: int) -> None:
    handled_fs = _FS_BY_ABI.get(abi, _FS_ALL_ABI5)
    handled_net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("QQQ", handled_fs, handled_net, scoped)
    elif abi >= 4:
        attr = struct.pack("QQ", handled_fs, handled_net)
    else:
        attr = struct.pack("Q", handled_fs)
    buffer = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _syscall(_SYS_LANDLOCK_CREATE_RULESET, buffer, ctypes.c_size_t(len(attr)), 0)
    try:
        rules = [(p, _READ) for p in paths.read]
        rules += [(p, handled_fs) for p in paths.write]
        rules += [(p, _FS_READ_FILE | _FS_WRITE_FILE | _FS_IOCTL_DEV) for p in paths.read_write_files]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a location this host does not have
            try:
                allowed = rights & handled_fs
                if not os.path.isdir(path):
                    allowed &= _FS_FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
                _syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), _LANDLOCK_RULE_PATH_BENEATH, rule, 0)
            finally:
                os.close(fd)
        _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), 0)
    finally:
        os.close(ruleset)


def _network_namespace() -> bool:
    """A new network namespace (in a new user namespace when this process may not make one)."""
    libc = _libc()
    if libc.unshare(_CLONE_NEWNET) == 0:
        return True
    return bool(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0)


def _drop_capabilities() -> bool:
    for cap in range(64):
        try:
            _prctl(_PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                break
            if exc.errno != errno.EPERM:
                raise
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)
    arch = _arch()
    if arch is None:
        return False
    try:
        _syscall(arch.capset, ctypes.create_string_buffer(header, 8), ctypes.create_string_buffer(data, 24))
    except OSError:
        return False
    return True


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(arch: _Arch) -> bytes:
    """The filter (classic BPF over ``struct seccomp_data``): kill on a foreign architecture,
    ``EPERM`` for ``socket``, namespace-making ``clone``, ``clone3`` (``ENOSYS``: libc falls back
    to ``clone``) and the denied calls; allow the rest."""
    eperm = _SECCOMP_RET_ERRNO | errno.EPERM
    deny = [arch.socket, arch.unshare, *arch.denied]
    prog = [
        _bpf(_BPF_LD_W_ABS, 4),
        _bpf(_BPF_JEQ_K, arch.audit, jt=1),
        _bpf(_BPF_RET_K, _SECCOMP_RET_KILL_PROCESS),
    ]
    prog.append(_bpf(_BPF_LD_W_ABS, 0))
    if arch.x32_bit:
        prog += [_bpf(_BPF_JGE_K, arch.x32_bit, jf=1), _bpf(_BPF_RET_K, eperm)]
    prog += [_bpf(_BPF_JEQ_K, arch.clone3, jf=1), _bpf(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno.ENOSYS)]
    for number in deny:
        prog += [_bpf(_BPF_JEQ_K, number, jf=1), _bpf(_BPF_RET_K, eperm)]
    # clone(flags, ...): flags are args[0], whose low 32 bits are at offset 16 on little endian
    prog += [
        _bpf(_BPF_JEQ_K, arch.clone, jf=3),
        _bpf(_BPF_LD_W_ABS, 16),
        _bpf(_BPF_JSET_K, _NAMESPACE_FLAGS, jf=1),
        _bpf(_BPF_RET_K, eperm),
        _bpf(_BPF_RET_K, _SECCOMP_RET_ALLOW),
    ]
    return b"".join(prog)


def _seccomp() -> bool:
    arch = _arch()
    if arch is None or sys.byteorder != "little":
        return False
    program = seccomp_program(arch)
    count = len(program) // 8
    filters = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxQ", count, ctypes.addressof(filters))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    libc = _libc()
    result = libc.prctl(
        _PR_SET_SECCOMP,
        ctypes.c_ulong(_SECCOMP_MODE_FILTER),
        fprog_buffer,
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    return bool(result == 0)


def confine(paths: Paths, *, require: bool = True) -> ConfinementReport:
    """Confine this process (single-threaded, before it opens anything untrusted) to ``paths``.

    With ``require``, raise :class:`ConfinementUnavailable` unless both Landlock and seccomp
    were applied; the process is then partly confined and must not go on to open the model.
    """
    if not sys.platform.startswith("linux"):
        if require:
            raise ConfinementUnavailable(
                f"confinement needs Linux (Landlock and seccomp), this is {sys.platform}"
            )
        return ConfinementReport(0, False, False, False)
    netns = _network_namespace()
    caps = _drop_capabilities()
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    abi = landlock_abi()
    if abi:
        try:
            _landlock(paths, abi)
        except OSError as exc:
            if require:
                raise ConfinementUnavailable(f"Landlock (ABI {abi}) could not be applied: {exc}") from exc
            abi = 0
    seccomp = _seccomp()
    report = ConfinementReport(
        landlock_abi=abi, seccomp=seccomp, network_namespace=netns, capabilities_dropped=caps
    )
    if require and not report.active:
        raise ConfinementUnavailable(
            f"expected Landlock and seccomp to confine the analysis process, got {report.describe()} "
            "(a kernel without Landlock, or a container runtime whose seccomp profile blocks it)"
        )
    return report


# --- the probe ----------------------------------------------------------------------------------


def _probe_child(workdir: Path) -> dict[str, object]:
    """Run in a throw-away child: confine to ``workdir``, then check what holds."""
    report = confine(default_paths([workdir]), require=False)
    result: dict[str, object] = report.to_dict()
    (workdir / "written").write_text("ok")
    checks: dict[str, bool] = {}
    try:
        Path("/etc/hostname").read_bytes()
        checks["read_outside_refused"] = False
    except OSError:
        checks["read_outside_refused"] = True
    import socket

    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        checks["socket_refused"] = False
    except OSError:
        checks["socket_refused"] = True
    result["checks"] = checks
    result["active"] = bool(report.active and all(checks.values()))
    return result


def probe() -> dict[str, object]:
    """Which confinement this host gives an analysis process, found by confining a child for real.

    Returns :meth:`ConfinementReport.to_dict` plus ``checks`` (what the child tried) and
    ``active``: both Landlock and seccomp held. Cached for the process's life by the callers.
    """
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="neuronscope-probe-") as tmp:
        env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8"}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "neuronscope.confinement", "--probe-child", tmp],
                env=env,
                cwd=tmp,
                capture_output=True,
                timeout=60,
                check=False,
            )
            answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
            return {"active": False, "mechanism": "none", "error": f"the probe failed: {type(exc).__name__}"}
        if not isinstance(answer, dict):
            return {"active": False, "mechanism": "none", "error": "the probe answered no object"}
        return answer


@lru_cache(maxsize=1)
def host_confinement() -> dict[str, object]:
    """:func:`probe`, once per process."""
    return probe()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--probe-child":
        sys.stdout.write(json.dumps(_probe_child(Path(args[1]))) + "\n")
        return 0
    sys.stdout.write(json.dumps(probe(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
