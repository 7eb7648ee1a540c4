"""`GET /openapi.json`: the directory's API described in OpenAPI 3.0."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.directory.app import json_response
from gateway.directory.records import REASONS

_ERROR = {"$ref": "#/components/schemas/Error"}
_CERT = {"$ref": "#/components/schemas/Certificate"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed request", 401: "no credentials", 403: "token invalid or for "
            "another domain", 404: "not found", 409: "conflict", 413: "body too large",
            415: "wrong content type", 422: "certificate refused", 429: "too many failed "
            "authentications", 503: "storage unavailable"}
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def _name_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 320}}


_LIST = {"type": "object", "required": ["name", "certificates"], "properties": {
    "name": {"type": "string"}, "certificates": {"type": "array", "items": _CERT}}}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "smimegate directory", "version": __version__,
             "description": "Public certificate lookup for S/MIME gateways, with an OCSP "
                            "responder (RFC 6960) and RFC 4387 certificate store access."},
    "paths": {
        "/v1/domains/{domain}/certificates": {"get": {
            "summary": "current certificates of a domain",
            "parameters": [_name_param("domain", "a domain name")],
            "responses": {"200": _json(_LIST, "the certificates"),
                          "304": {"description": "not modified (If-None-Match)"},
                          **_errors(400, 404)}}},
        "/v1/addresses/{address}/certificates": {"get": {
            "summary": "current certificates of an e-mail address",
            "parameters": [_name_param("address", "an e-mail address")],
            "responses": {"200": _json(_LIST, "the certificates"),
                          "304": {"description": "not modified (If-None-Match)"},
                          **_errors(400, 404)}}},
        "/v1/lookup": {"post": {
            "summary": "many domains and addresses in one request (at most 100 names)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "properties": {
                    "domains": {"type": "array", "items": {"type": "string"}},
                    "addresses": {"type": "array", "items": {"type": "string"}}}}}}},
            "responses": {"200": _json({"type": "object", "required": ["results", "missing"],
                                        "properties": {
                                            "results": {"type": "object",
                                                        "additionalProperties": {
                                                            "type": "array", "items": _CERT}},
                                            "missing": {"type": "array",
                                                        "items": {"type": "string"}}}},
                                       "certificates per name, and the names with none"),
                          "304": {"description": "not modified (If-None-Match)"},
                          **_errors(400, 413, 415)}}},
        "/v1/certificates": {"post": {
            "summary": "publish a certificate for the token's domain",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {
                    "type": "object", "required": ["certificate"],
                    "additionalProperties": False, "properties": {
                        "certificate": {"type": "string", "description": "PEM"},
                        "chain": {"type": "array", "items": {"type": "string"}},
                        "domain": {"type": "string"}}}},
                "application/pem-certificate-chain": {"schema": {"type": "string"}},
                "application/pkix-cert": {"schema": {"type": "string",
                                                     "format": "binary"}}}},
            "responses": {
                "201": _json({"type": "object", "properties": {"created": {"type": "boolean"},
                                                               "certificate": _CERT}},
                             "published"),
                "200": _json({"type": "object", "properties": {"created": {"type": "boolean"},
                                                               "certificate": _CERT}},
                             "already published"),
                **_errors(400, 401, 403, 409, 413, 415, 422, 429)}}},
        "/v1/certificates/{fingerprint}": {"get": {
            "summary": "one certificate by SHA-256 fingerprint, with its state",
            "parameters": [_name_param("fingerprint", "64 hex digits")],
            "responses": {"200": _json(_CERT, "the certificate"),
                          "304": {"description": "not modified (If-None-Match)"},
                          **_errors(400, 404)}}},
        "/v1/certificates/{fingerprint}/revoke": {"post": {
            "summary": "withdraw a certificate of the token's domain",
            "security": [{"bearer": []}],
            "parameters": [_name_param("fingerprint", "64 hex digits")],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "properties": {
                    "reason": {"type": "string", "enum": list(REASONS)}}}}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "certificate": _CERT}}, "revoked (or already revoked)"),
                **_errors(400, 401, 403, 404, 413, 415, 429)}}},
        "/v1/verify": {"post": {
            "summary": "verdict on a signer's certificate chain or CMS signature",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "properties": {
                    "chain": {"type": "array", "items": {"type": "string"}},
                    "cms": {"type": "string", "description": "base64 DER SignedData"},
                    "address": {"type": "string"}}}}}},
            "responses": {"200": _json({"type": "object", "required": ["verdict", "code"],
                                        "properties": {
                                            "verdict": {"type": "string", "enum": [
                                                "good", "revoked", "invalid", "unknown"]},
                                            "code": {"type": "string"},
                                            "reason": {"type": "string"}}}, "the verdict"),
                          **_errors(400, 413, 415, 422)}}},
        "/ocsp": {"post": {
            "summary": "OCSP (RFC 6960)",
            "requestBody": {"required": True, "content": {"application/ocsp-request": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {"200": {"description": "an OCSPResponse", "content": {
                "application/ocsp-response": {"schema": {"type": "string",
                                                         "format": "binary"}}}},
                          **_errors(413, 415)}}},
        "/ocsp/{request}": {"get": {
            "summary": "OCSP over GET (RFC 6960 Appendix A.1)",
            "parameters": [_name_param("request", "base64 DER OCSPRequest")],
            "responses": {"200": {"description": "an OCSPResponse", "content": {
                "application/ocsp-response": {"schema": {"type": "string",
                                                         "format": "binary"}}}},
                          **_errors(400)}}},
        "/search.cgi": {"get": {
            "summary": "RFC 4387 certificate store access (exactly one attribute)",
            "parameters": [{"name": a, "in": "query", "required": False,
                            "schema": {"type": "string"}}
                           for a in ("certHash", "sHash", "iHash", "iAndSHash", "sKIDHash",
                                     "name", "email", "uri")],
            "responses": {"200": {"description": "application/pkix-cert, or multipart/mixed "
                                                 "of several"}, **_errors(400, 404)}}},
        "/healthz": {"get": {"summary": "liveness and storage reachability", "responses": {
            "200": _json({"type": "object"}, "ok"), **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "text exposition format"}}}},
        "/openapi.json": {"get": {"summary": "this document", "responses": {
            "200": _json({"type": "object"}, "OpenAPI 3")}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "reason", "status"],
                      "properties": {"error": {"type": "string"},
                                     "reason": {"type": "string"},
                                     "status": {"type": "integer"}}},
            "Certificate": {"type": "object", "required": ["fingerprint", "pem", "usage"],
                            "properties": {
                                "fingerprint": {"type": "string"},
                                "pem": {"type": "string"},
                                "chain": {"type": "array", "items": {"type": "string"}},
                                "domain": {"type": "string"},
                                "names": {"type": "array", "items": {"type": "string"}},
                                "subject": {"type": "string"},
                                "issuer": {"type": "string"},
                                "serial": {"type": "string"},
                                "usage": {"type": "array", "items": {
                                    "type": "string", "enum": ["encryption", "signing"]}},
                                "not_before": {"type": "string", "format": "date-time"},
                                "not_after": {"type": "string", "format": "date-time"},
                                "smime_capabilities": {"type": "array", "nullable": True,
                                                       "items": {"type": "string"}},
                                "state": {"type": "string", "enum": ["active", "revoked"]},
                                "published_at": {"type": "string", "format": "date-time"},
                                "revoked_at": {"type": "string", "format": "date-time",
                                               "nullable": True},
                                "revocation_reason": {"type": "string", "nullable": True}}},
        },
    },
}


async def openapi(request: web.Request) -> web.Response:
    return json_response(SPEC, headers={"Cache-Control": "public, max-age=3600"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
