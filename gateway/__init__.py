"""ingress-gateway: the edge of a service mesh, where every trace starts."""

__version__ = "0.1.0"
