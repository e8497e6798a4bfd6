"""Tap devices whose life is bound to an open file descriptor.

A tap is created by opening /dev/net/tun and naming it with TUNSETIFF; it appears in the network
namespace of the thread that opened the device (so this runs inside `run_in_netns`). It is not
made persistent: when the last descriptor closes (the monitor's copy right after QEMU started,
QEMU's when QEMU exits for any reason) the kernel deletes the tap and the tc filters on it, so a
crashed VM cannot leave a tap behind. IFF_VNET_HDR lets QEMU pass checksum and segmentation
offloads through instead of the guest cutting every stream into MTU-sized frames.
"""

from __future__ import annotations

import fcntl
import os
import struct

from cocoon.errors import NetworkError

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFNAMSIZ = 16
_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")  # struct ifreq: name, flags, rest of the union


def open_tap(name: str) -> int:
    """Create the tap `name` in this thread's namespace; return its fd (close-on-exec)."""
    if not 0 < len(name.encode()) < IFNAMSIZ:
        raise NetworkError(f"tap name {name!r} must be 1-{IFNAMSIZ - 1} bytes", tap=name)
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise NetworkError(f"cannot open {TUN_DEVICE}: {err.strerror} (is the tun module "
                           "loaded?)", path=TUN_DEVICE) from err
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError as err:
        os.close(fd)
        raise NetworkError(f"cannot create tap {name}: {err.strerror}", tap=name) from err
    return fd
