from realtime.consumers import RuntimeAgentConsumer
from realtime.middleware import RuntimeSocketApp

# Socket paths and their consumers; the one layer in front of them is RuntimeSocketApp.
websocket_application = RuntimeSocketApp({"/api/runtime/agent": RuntimeAgentConsumer})
