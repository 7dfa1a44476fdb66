"""Test doubles that users may import to test their own strategies, verifiers, tasks and backends.

- :mod:`ttscale.testing.fake_steps`: a scripted multi-step backend (``ScriptedStepBackend``, step
  hooks and next-token probes) and a scripted reward model, for search and early stopping;
- :mod:`ttscale.testing.openai_fake_server`: a scriptable OpenAI-compatible server on loopback that
  can fail on purpose (timeouts, 5xx, malformed bodies), for HTTP backends;
- :mod:`ttscale.testing.synthetic`: synthetic sample pools with known accuracy, for replay;
- :mod:`ttscale.testing.fixtures`: pytest fixtures (``pytest -p ttscale.testing.fixtures``).

The one-call fake engine, :class:`ttscale.backends.fake.FakeBackend`, stays a backend of its own
(``--backend fake``) since the CLI and server use it for dry runs.
"""
