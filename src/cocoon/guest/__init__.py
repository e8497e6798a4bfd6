"""Guest assets: the kernel, the guest image, the floor initrd and the busybox container image.

Other packages use `cocoon.guest.assets`; the modules beside it are its parts.
"""
