"""Framework-free channel protocol code: each provider is a folder of the same shape
(inbound verify + parse, outbound send, errors). Nothing here imports Django."""
