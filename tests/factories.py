"""Factories for harness's own tests, declared the way users declare them."""

from __future__ import annotations

import factory

from harness import ModelFactory
from tests.models import Account, Campaign, Contact, Owner, Pet


class CampaignFactory(ModelFactory[Campaign]):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"campaign {n}")


class ContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+1555{n:07d}")
    campaign = factory.SubFactory(CampaignFactory)


class OwnerFactory(ModelFactory[Owner]):
    class Meta:
        model = Owner


class AccountFactory(ModelFactory[Account]):
    """Declares nothing: every column is derived from the model."""

    class Meta:
        model = Account


class PetFactory(ModelFactory[Pet]):
    class Meta:
        model = Pet

    name = "Rex"
