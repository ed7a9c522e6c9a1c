"""Fixtures shared by the store's test files."""

from __future__ import annotations

import pytest

from app.db.migrate import upgrade
from app.settings import Settings
from tests.s3 import new_bucket
from tests.store.test_service_s3 import s3_settings


@pytest.fixture(params=["local", "s3"])
def gc_settings(request, tmp_path, s3_endpoint) -> Settings:
    """Settings for `distillery gc` on either store (the S3 one on its own new bucket), database migrated."""
    settings = s3_settings(tmp_path, s3_endpoint, new_bucket(s3_endpoint), "api", retention_days=30)
    if request.param == "local":
        settings = settings.model_copy(update={"store": "local"})
    upgrade(settings.sqlalchemy_url)
    return settings
