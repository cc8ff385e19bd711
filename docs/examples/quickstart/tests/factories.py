# --8<-- [start:factories]
import factory

from app.db import Campaign, Contact
from harness import ModelFactory


class CampaignFactory(ModelFactory[Campaign]):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")

    @factory.post_generation
    async def contacts(self, create, extracted, **kwargs):
        if create and extracted:  # CampaignFactory.create(contacts=2)
            await ContactFactory.create_batch(extracted, campaign=self)


class ContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+1555{n:07d}")
    campaign = factory.SubFactory(CampaignFactory)


# --8<-- [end:factories]
