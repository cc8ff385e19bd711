"""A small campaign service in the domain of our users' suites: campaigns, contacts, daily limits."""
