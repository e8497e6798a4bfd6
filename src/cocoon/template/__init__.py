"""VM templates (Kata's "factory"): a guest booted once, saved, and cloned for every sandbox.

A template is a guest booted with the agent ready and every module it needs imported, trimmed
(caches dropped, free memory zeroed), paused and saved: its RAM in a file, its device state
through QEMU's migration into another. A sandbox then starts as a clone restored from those
files instead of booting. `spec` says what a template is made of and names it by digest,
`store` keeps templates on disk and checks them before use, `build` makes one, `clone` prepares
a clone's memory, and `policy` decides whether a sandbox starts from a template at all.
"""
