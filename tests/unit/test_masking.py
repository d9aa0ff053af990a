from __future__ import annotations

import pytest

from gateway.masking import mask_header_values, mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://collector:9411/api/v2/spans", "http://collector:9411/api/v2/spans"),
        ("https://user:s3cret@collector:4318/v1/traces", "https://user:***@collector:4318/v1/traces"),
        ("https://token@collector/v1/traces", "https://***@collector/v1/traces"),
        ("notaurl", "notaurl"),
        ("", ""),
    ],
)
def test_mask_url_hides_only_the_credentials(url, shown):
    assert mask_url(url) == shown


def test_mask_header_values_keeps_the_keys():
    assert mask_header_values("authorization=Bearer abc, x-tenant=7") == "authorization=***,x-tenant=***"
    assert mask_header_values("garbage") == "***"
    assert mask_header_values("") == ""
