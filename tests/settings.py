"""pytest's settings: project.settings as deployed, given the test-only SECRET_KEY (it refuses
to start without one), set in the environment before the import as for a real process, and so
shared with the server subprocesses the tests start."""

import os

from tests.support.servers import TEST_SECRET_KEY

os.environ["SECRET_KEY"] = TEST_SECRET_KEY

from project.settings import *  # noqa: E402, F403
