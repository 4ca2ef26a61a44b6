"""Shared fixtures: tiny sizes so the whole suite stays well inside CI's time on 2 cores."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
