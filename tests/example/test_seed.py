"""Seed data: committed once, loaded fresh into each test's session."""

from __future__ import annotations

import harness
from harness import AppClient, Seeded


# --8<-- [start:test]
async def test_the_seeded_admin_can_sign_in(client: AppClient, seeded: Seeded) -> None:
    response = await client.get("/api/campaigns", headers=harness.auth_headers(seeded.admin.api_token))
    assert response.status_code == 200


async def test_a_change_to_seed_data_ends_with_the_test(seeded: Seeded) -> None:
    seeded.admin.email = "someone-else@campaigns.test"  # rolled back with the test, as everything is
    # --8<-- [end:test]


async def test_the_admin_is_back_as_seeded(seeded: Seeded) -> None:
    assert seeded.admin.email == "ops@campaigns.test"
