"""The sandbox's syscall filter: a classic BPF program built with the standard library.

bwrap reads the program from a file descriptor (``--seccomp FD``) as an array of
``struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}`` and installs it on the sandboxed process
after ``PR_SET_NO_NEW_PRIVS``. The filter denies (``EPERM``) the syscalls that attack the kernel
or a neighbouring process rather than compute: ptrace and cross-process memory access, the key
ring, eBPF, userfaultfd, perf, mounting, namespace creation and entry, module and kexec loading,
io_uring and ``personality``; ``clone`` with a namespace flag is denied too, ``clone3`` answers
``ENOSYS`` so libc falls back to ``clone`` (whose flags a classic filter can read). A syscall from
a foreign architecture (i386 via ``int 0x80``) or the x32 ABI kills the process: their numbers
differ and would slip past the list.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

# BPF instruction classes and modes (linux/bpf_common.h).
_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_BPF_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K

# Return values (linux/seccomp.h).
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# Offsets into struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];}.
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16  # little-endian: the low 32 bits of args[0] come first

AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (linux/sched.h).
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000
CLONE_NAMESPACE_FLAGS |= 0x10000000 | 0x20000000 | 0x40000000

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
X86_64_DENIED: dict[str, int] = {
    "ptrace": 101,
    "personality": 135,
    "pivot_root": 155,
    "mount": 165,
    "umount2": 166,
    "init_module": 175,
    "delete_module": 176,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
}
X86_64_CLONE = 56
X86_64_CLONE3 = 435


class UnsupportedArchitecture(RuntimeError):
    """The filter's syscall table covers x86_64 only; elsewhere the sandbox fails closed."""


@dataclass(frozen=True)
class _Insn:
    code: int
    k: int
    jt: str | int = 0  # a label name, or 0 for "the next instruction"
    jf: str | int = 0


def _assemble(program: list[_Insn | str]) -> bytes:
    """Resolve label names to relative jump offsets and pack the sock_filter array."""
    positions: dict[str, int] = {}
    insns: list[_Insn] = []
    for item in program:
        if isinstance(item, str):
            positions[item] = len(insns)
        else:
            insns.append(item)

    def offset(target: str | int, at: int) -> int:
        if isinstance(target, int):
            return target
        distance = positions[target] - at - 1
        if not 0 <= distance <= 255:
            raise ValueError(f"BPF jump to {target} out of range ({distance})")
        return distance

    return b"".join(
        struct.pack("=HBBI", insn.code, offset(insn.jt, i), offset(insn.jf, i), insn.k)
        for i, insn in enumerate(insns)
    )


def build_filter(machine: str | None = None) -> bytes:
    """The filter for this machine's architecture, as bwrap's ``--seccomp`` expects it."""
    machine = machine or platform.machine()
    if machine != "x86_64":
        raise UnsupportedArchitecture(f"no seccomp syscall table for {machine}")
    program: list[_Insn | str] = [
        _Insn(_BPF_LD_W_ABS, _OFFSET_ARCH),
        _Insn(_BPF_JEQ_K, AUDIT_ARCH_X86_64, jt=0, jf="kill"),
        _Insn(_BPF_LD_W_ABS, _OFFSET_NR),
        _Insn(_BPF_JGE_K, _X32_SYSCALL_BIT, jt="kill", jf=0),
    ]
    for number in sorted(X86_64_DENIED.values()):
        program.append(_Insn(_BPF_JEQ_K, number, jt="eperm", jf=0))
    program += [
        _Insn(_BPF_JEQ_K, X86_64_CLONE3, jt="enosys", jf=0),
        _Insn(_BPF_JEQ_K, X86_64_CLONE, jt=0, jf="allow"),
        _Insn(_BPF_LD_W_ABS, _OFFSET_ARG0_LOW),
        _Insn(_BPF_JSET_K, CLONE_NAMESPACE_FLAGS, jt="eperm", jf="allow"),
        "allow",
        _Insn(_BPF_RET_K, SECCOMP_RET_ALLOW),
        "eperm",
        _Insn(_BPF_RET_K, SECCOMP_RET_ERRNO | errno.EPERM),
        "enosys",
        _Insn(_BPF_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS),
        "kill",
        _Insn(_BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    ]
    return _assemble(program)
