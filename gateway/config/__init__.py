"""Settings: TOML files into typed, frozen values, each setting declared once.

The declaration (gateway.config.schema) is the single table that the loader, the
`smimegate config --defaults` output and the example configuration are all made from.
Every error names the key and says what is wrong with it.
"""

from gateway.config.errors import ConfigError
from gateway.config.load import load_directory_config, load_gateway_config, parse_config
from gateway.config.schema import DirectoryConfig, GatewayConfig

__all__ = [
    "ConfigError",
    "DirectoryConfig",
    "GatewayConfig",
    "load_directory_config",
    "load_gateway_config",
    "parse_config",
]
