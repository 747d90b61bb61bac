"""models.json and token_bypasses.json: the values (:mod:`.model`), the strict schema (:mod:`.schema`) and the
readers (:mod:`.files`)."""

from .files import MODEL_KEYS, TOP_LEVEL_KEYS, check_file, load_bypasses, load_config, parse_config, read_json
from .model import (
    COST_LIMIT_KEYS,
    ENFORCEMENT_MODES,
    PRICE_KEYS,
    TOKEN_LIMIT_KEYS,
    AlertSettings,
    Bypasses,
    Config,
    LimitSpec,
    ModelEntry,
    ModelPrice,
)
from .schema import json_schema

__all__ = ["COST_LIMIT_KEYS", "ENFORCEMENT_MODES", "MODEL_KEYS", "PRICE_KEYS", "TOKEN_LIMIT_KEYS", "TOP_LEVEL_KEYS",
           "AlertSettings", "Bypasses", "Config", "LimitSpec", "ModelEntry", "ModelPrice", "check_file",
           "json_schema", "load_bypasses", "load_config", "parse_config", "read_json"]
