"""Policy adapters: lerobot's ACT and Diffusion behind one interface (batch in, per-sample losses out)."""

from policies.adapters.base import PolicyAdapter, PolicyConfigError, get_adapter_class

__all__ = ["PolicyAdapter", "PolicyConfigError", "get_adapter_class"]
