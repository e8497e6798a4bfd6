"""Cocoon's test framework: real VMs for tests, and proof that nothing is left behind.

- `tests.framework.sandbox.Sandbox`: one sandbox (monitor, QEMU, virtiofsd, agent) booted
  through the launcher and always stopped; it keeps the monitor and console logs readable after
  the sandbox removed its directory.
- `tests.framework.leaks.LeakCheck`: after a scenario, no QEMU, virtiofsd, monitor or shim
  process, no mount and no directory of the scenario may be left; what is found is cleaned up
  and reported.
- `tests.framework.guests`: variant guest images (a guest that writes garbage on the agent port).
- `tests.framework.fakeagent.FakeAgent`: the agent's ttrpc services in-process, recording every
  request, for unit tests of the agent client and the relay (no VM).

Fixtures (tests/conftest.py), for every test marked `vm` or `integration`:

- the leak check runs automatically after the test (`leak_check`, a `LeakCheck`);
- `vm_root`: a private, short VM root the test runs with (`COCOON_VM_DIR` points at it, so
  `vm_dir_for` and the runtime put every sandbox directory there);
- `state_root`: a fresh runtime state root, checked for leftover directories;
- `sandboxes`: `sandboxes.boot(id, **SandboxConfig fields) -> Sandbox`, all stopped at the end.

VM tests are skipped, with the reason, only when QEMU (with TCG) is missing.
"""
