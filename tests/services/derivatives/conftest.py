import pytest

from services.common.app import ServiceContext


@pytest.fixture
def ctx():
    return ServiceContext("test", issuer_url="http://127.0.0.1:8000", rate=1000.0, burst=1000)
