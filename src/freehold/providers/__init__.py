"""Storage providers and the URL scheme that names them."""

from __future__ import annotations

from urllib.parse import urlparse

from ..errors import UsageError
from .base import Capabilities, Provider, ProviderInfo, overlapping
from .local import LocalProvider

__all__ = ["Capabilities", "LocalProvider", "Provider", "ProviderInfo", "open_provider", "overlapping"]


def open_provider(url: str, *, jurisdiction: str = "", operator: str = "") -> Provider:
    """Open the provider a URL names. Credentials never appear in the URL."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        return LocalProvider.from_url(url, jurisdiction=jurisdiction, operator=operator)
    if scheme == "s3":
        from .s3 import S3Provider  # imported lazily: boto3 is slow to import

        return S3Provider.from_url(url, jurisdiction=jurisdiction, operator=operator)
    if scheme == "ipfs":
        from .ipfs import IpfsProvider

        return IpfsProvider.from_url(url, jurisdiction=jurisdiction, operator=operator)
    raise UsageError(f"unsupported provider URL {url!r} "
                     "(use file:///abs/path, s3://bucket/prefix or ipfs://host:port/prefix)")
