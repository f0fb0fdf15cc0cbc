from __future__ import annotations

import pytest

from tests.flows import Clinic


@pytest.fixture
def clinic(api) -> Clinic:
    return Clinic.over(api.http, api.his)
