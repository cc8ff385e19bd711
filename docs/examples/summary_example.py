"""Test categories for the run summary (--harness-summary)."""

from __future__ import annotations

# --8<-- [start:categories]
import pytest

from app import Campaign
from harness import IntegrationTest


@pytest.mark.category("end-to-end")
class TestCampaignFlow(IntegrationTest):
    async def test_create_then_read(self):
        created = await self.client.post("/api/campaigns", json={"name": "January"})
        assert (await self.db.get(Campaign, created.json()["id"])).name == "January"

    @pytest.mark.category("validation", "edge-cases")  # adds to the class's category
    async def test_missing_name_is_a_422(self):
        assert (await self.client.post("/api/campaigns", json={})).status_code == 422


# --8<-- [end:categories]
