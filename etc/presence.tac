"""Run the server with twistd -ny etc/presence.tac (from the repository root)."""

from twisted.application.service import Application

from presence.tap import Options, makeService

options = Options()
options.parseOptions(["--config", "etc/presence.toml"])
application = Application("presence")
makeService(options).setServiceParent(application)
