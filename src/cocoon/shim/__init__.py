"""containerd-shim-cocoon-v2: containerd's runtime v2 shim, one daemon and one VM per pod.

`main` is the binary's edge (`start`, `delete`, `-v`); `daemon` serves `containerd.task.v2.Task`
(`task`) for every container of one pod (`pod`), relays their stdio (`stdio`), mounts their
rootfs (`mounts`) and publishes task events back to containerd (`events`).
"""
