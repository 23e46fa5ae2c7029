"""The local demo's stand-ins: started in this process, with the settings that point the app at them."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from tools.fake_idp import FakeIdP


def provider_settings(idp: FakeIdP, clients: dict[str, tuple[str, str]]) -> dict[str, str]:
    """App settings for each realm of the stand-in: client id and secret, issuer and endpoints."""
    settings = {}
    for realm, (client_id, secret) in clients.items():
        endpoints = idp.endpoints(realm)
        prefix = realm.upper()
        settings.update({f"{prefix}_CLIENT_ID": client_id, f"{prefix}_CLIENT_SECRET": secret,
                         f"{prefix}_ISSUER": endpoints["issuer"],
                         f"{prefix}_AUTHORIZE_URL": endpoints["authorization_endpoint"],
                         f"{prefix}_TOKEN_URL": endpoints["token_endpoint"],
                         f"{prefix}_USERINFO_URL": endpoints["userinfo_endpoint"]})
    return settings


def start_stand_ins(base_url: str) -> tuple[dict[str, str], list[Callable[[], None]]]:
    """Start the identity-provider stand-in (as Google and Microsoft) for an app at base_url.

    Returns the setting overrides for the app and the functions that stop what was started.
    """
    idp = FakeIdP()
    clients = {}
    for realm in ("google", "microsoft"):
        idp.add_realm(realm, style=realm)
        clients[realm] = (f"demo-{realm}-client", secrets.token_urlsafe(24))
        idp.add_client(realm, client_id=clients[realm][0], client_secret=clients[realm][1],
                       redirect_uris=[f"{base_url}/auth/{realm}/callback"])
    idp.with_demo_accounts().start()
    return provider_settings(idp, clients), [idp.stop]
