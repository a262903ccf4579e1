from twisted.application.service import ServiceMaker

presence = ServiceMaker(
    "SIP presence server", "presence.tap", "A SIP presence server.", "presence"
)
