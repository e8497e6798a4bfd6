"""The OCI layer: config.json model and validation (`spec`), bundles (`bundle`), the default
config (`default`) and conversions to the agent API's messages (`convert`)."""

from cocoon.oci.bundle import Bundle, load_bundle
from cocoon.oci.spec import Spec, load_spec, parse_spec

__all__ = ["Bundle", "Spec", "load_bundle", "load_spec", "parse_spec"]
