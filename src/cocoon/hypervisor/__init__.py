"""The hypervisor layer: one QEMU process per VM, driven from a frozen description.

`config` describes a VM, `cmdline` turns it into QEMU's argv (pure), `qemu` runs the process
and its QMP session, `probe` boots a throw-away VM to test an accelerator, `accel` decides KVM or
TCG from that probe and caches the answer, and `hostcheck` backs `cocoon check`.
"""
