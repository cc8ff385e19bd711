"""The example's factories: declared once, created through the test's session."""

from __future__ import annotations

import factory

from app.models import Campaign, Contact, User
from harness import ModelFactory


class CampaignFactory(ModelFactory[Campaign]):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    template_a = "Hi {name}!"
    template_b = "Hello {name}!"

    @factory.post_generation
    async def contacts(self, create: bool, extracted: int | None, **_: object) -> None:
        """``CampaignFactory.create(contacts=10)`` adds ten contacts after the campaign is inserted."""
        if create and extracted:
            await ContactFactory.create_batch(extracted, campaign=self)


class ContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+1555{n:07d}")
    name = factory.Faker("name")
    campaign = factory.SubFactory(CampaignFactory)


class UserFactory(ModelFactory[User]):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    api_token = factory.Faker("hexify", text="^" * 32)
