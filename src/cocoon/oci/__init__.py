"""The OCI layer: config.json model and validation (`spec`), bundles (`bundle`), the default
config (`default`), conversions to the agent API's messages (`convert`) and container state
(`state`).

Import the modules themselves: the package imports none of them, so reading a container's
state does not pay for the config.json model.
"""
