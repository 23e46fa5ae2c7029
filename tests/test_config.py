"""Settings: defaults, .env, environment and overrides in that order; every problem reported at once."""

import pytest

from services.config import ConfigError, load_settings

GOOD = {"SECRET_KEY": "k" * 40, "PUBLIC_BASE_URL": "https://images.example.com",
        "GOOGLE_CLIENT_ID": "123.apps.googleusercontent.com", "GOOGLE_CLIENT_SECRET": "google-secret-value",
        "STRIPE_SECRET_KEY": "sk_test_example_key", "STRIPE_WEBHOOK_SECRET": "whsec_example_secret",
        "OPENAI_API_KEY": "sk-example-openai-key"}


def load(environ=None, overrides=None, env_file=None, tmp_path=None):
    return load_settings(overrides, environ=environ or {}, env_file=env_file or (tmp_path / "absent.env"))


def test_production_without_settings_lists_every_missing_one(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load({}, tmp_path=tmp_path)
    message = str(caught.value)
    assert "SECRET_KEY is missing" in message
    assert "PUBLIC_BASE_URL is missing" in message
    assert "no sign-in provider is configured" in message
    assert "STRIPE_SECRET_KEY is missing" in message and "STRIPE_WEBHOOK_SECRET is missing" in message
    assert "OPENAI_API_KEY is missing" in message
    assert message.count("\n  - ") == 6
    assert "Traceback" not in message


def test_malformed_values_are_all_reported_together_without_echoing_the_secret(tmp_path):
    environ = {**GOOD, "SECRET_KEY": "short-secret-value", "PUBLIC_BASE_URL": "http://images.example.com",
               "DATABASE_URL": "ftp://db.example.com/x", "SESSION_IDLE_SECONDS": "soon",
               "DEFAULT_LANGUAGE": "fr", "SERVE_STATIC": "maybe", "APP_MODE": "production"}
    with pytest.raises(ConfigError) as caught:
        load(environ, tmp_path=tmp_path)
    problems = caught.value.problems
    assert len(problems) == 6, problems
    text = str(caught.value)
    for name in ("SECRET_KEY", "PUBLIC_BASE_URL", "DATABASE_URL", "SESSION_IDLE_SECONDS", "DEFAULT_LANGUAGE",
                 "SERVE_STATIC"):
        assert name in text
    assert "short-secret-value" not in text
    assert "https in production" in text


def test_production_settings_are_accepted(tmp_path):
    settings = load(GOOD, tmp_path=tmp_path)
    assert settings.app_mode == "production"
    assert settings.is_https
    assert settings.serve_static is False
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("app.db")
    assert settings.url("/privacy") == "https://images.example.com/privacy"


def test_demo_and_test_modes_need_no_secrets(tmp_path):
    for mode in ("demo", "test"):
        settings = load({"APP_MODE": mode}, tmp_path=tmp_path)
        assert len(settings.secret_key) >= 32
        assert settings.serve_static is True
        assert settings.public_base_url.startswith("http://127.0.0.1")
    assert load({"APP_MODE": "demo"}, tmp_path=tmp_path).database_url.endswith("demo.db")


def test_env_file_then_environment_then_overrides(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# private settings\nexport SECRET_KEY='" + "f" * 40 + "'\n"
                        "PUBLIC_BASE_URL=https://from-file.example.com\nPLAN_CREDITS=10\nDEFAULT_LANGUAGE=en\n"
                        "GOOGLE_CLIENT_ID=gid\nGOOGLE_CLIENT_SECRET=\"quoted secret\"\n"
                        "STRIPE_SECRET_KEY=sk_test_x\nSTRIPE_WEBHOOK_SECRET=whsec_x\nOPENAI_API_KEY=sk-x\n",
                        encoding="utf-8")
    settings = load({"PLAN_CREDITS": "20"}, {"DEFAULT_LANGUAGE": "es"}, env_file=env_file)
    assert settings.secret_key == "f" * 40
    assert settings.public_base_url == "https://from-file.example.com"
    assert settings.plan_credits == 20
    assert settings.default_language == "es"
    assert settings.provider("google").client_secret == "quoted secret"


def test_base_url_must_be_a_site_root(tmp_path):
    for bad in ("https://example.com/shop", "https://example.com/?x=1", "example.com", "https://"):
        with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
            load({**GOOD, "PUBLIC_BASE_URL": bad}, tmp_path=tmp_path)
    assert load({**GOOD, "PUBLIC_BASE_URL": "https://example.com/"}, tmp_path=tmp_path).public_base_url \
        == "https://example.com"


def test_contact_email_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="CONTACT_EMAIL"):
        load({**GOOD, "CONTACT_EMAIL": "not an address"}, tmp_path=tmp_path)
    assert load({**GOOD, "CONTACT_EMAIL": "help@example.com"}, tmp_path=tmp_path).contact_email == "help@example.com"


def test_unknown_override_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting NOPE"):
        load(GOOD, {"NOPE": 1}, tmp_path=tmp_path)


def test_idle_timeout_cannot_exceed_absolute_lifetime(tmp_path):
    with pytest.raises(ConfigError, match="SESSION_IDLE_SECONDS"):
        load({**GOOD, "SESSION_IDLE_SECONDS": "100", "SESSION_MAX_SECONDS": "50"}, tmp_path=tmp_path)


def test_mariadb_url_shape_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="mysql://user:password@host:3306/database"):
        load({**GOOD, "DATABASE_URL": "mysql://user@host"}, tmp_path=tmp_path)
    settings = load({**GOOD, "DATABASE_URL": "mysql://u:p%40ss@localhost:3306/iib"}, tmp_path=tmp_path)
    assert settings.database_url.startswith("mysql://")


def test_providers_default_to_the_real_endpoints(tmp_path):
    settings = load({**GOOD, "MICROSOFT_CLIENT_ID": "ms-app-id", "MICROSOFT_CLIENT_SECRET": "ms-secret-value"},
                    tmp_path=tmp_path)
    google, microsoft = settings.provider("google"), settings.provider("microsoft")
    assert google.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert google.issuers == ("https://accounts.google.com", "accounts.google.com")
    assert google.scopes == ("openid", "email", "profile")
    assert microsoft.authorize_url == "https://login.microsoftonline.com/consumers/oauth2/v2.0/authorize"
    assert microsoft.token_url == "https://login.microsoftonline.com/consumers/oauth2/v2.0/token"
    assert microsoft.issuers == ("https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",)
    assert microsoft.userinfo_url == "https://graph.microsoft.com/oidc/userinfo"
    assert "ms-secret-value" not in repr(microsoft)


def test_microsoft_common_tenant_checks_the_issuer_against_the_tokens_tenant(tmp_path):
    settings = load({**GOOD, "MICROSOFT_CLIENT_ID": "ms", "MICROSOFT_CLIENT_SECRET": "s", "MICROSOFT_TENANT": "common"},
                    tmp_path=tmp_path)
    microsoft = settings.provider("microsoft")
    assert microsoft.authorize_url.startswith("https://login.microsoftonline.com/common/")
    assert microsoft.issuers == ("https://login.microsoftonline.com/{tenantid}/v2.0",)


def test_half_configured_providers_and_http_endpoints_are_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load({**GOOD, "MICROSOFT_CLIENT_ID": "ms-app-id", "GOOGLE_TOKEN_URL": "http://127.0.0.1:9/token",
              "MICROSOFT_TENANT": "contoso"}, tmp_path=tmp_path)
    text = str(caught.value)
    assert "MICROSOFT_CLIENT_SECRET is missing" in text
    assert "GOOGLE_TOKEN_URL must use https in production" in text
    assert "MICROSOFT_TENANT must be one of consumers, common" in text


def test_a_provider_without_credentials_is_not_offered(tmp_path):
    settings = load({"APP_MODE": "test"}, tmp_path=tmp_path)
    assert settings.providers == () and settings.provider("google") is None


def test_stripe_settings(tmp_path):
    settings = load(GOOD, tmp_path=tmp_path)
    assert settings.billing_enabled
    assert settings.stripe_api_base == "https://api.stripe.com"
    assert settings.stripe_form_origins == ("https://checkout.stripe.com", "https://billing.stripe.com")
    assert "sk_test_example_key" not in repr(settings) and "whsec_example_secret" not in repr(settings)
    with pytest.raises(ConfigError, match="STRIPE_FORM_ORIGINS must use https"):
        load({**GOOD, "STRIPE_FORM_ORIGINS": "http://127.0.0.1:9"}, tmp_path=tmp_path)
    assert not load({"APP_MODE": "test"}, tmp_path=tmp_path).billing_enabled


def test_generation_settings(tmp_path):
    settings = load({**GOOD, "PROMPT_SEPARATOR": ". "}, tmp_path=tmp_path)
    assert settings.prompt_separator == ". "
    assert settings.worker_launch == "spawn" and settings.worker_slots == 4
    assert load({"APP_MODE": "demo"}, tmp_path=tmp_path).worker_launch == "thread"
    assert load({"APP_MODE": "test"}, tmp_path=tmp_path).worker_launch == "none"
    assert "sk-example-openai-key" not in repr(settings)
    with pytest.raises(ConfigError, match="WORKER_LAUNCH must be spawn, thread or none"):
        load({**GOOD, "WORKER_LAUNCH": "fork"}, tmp_path=tmp_path)


def test_production_refuses_the_stand_ins_and_a_local_site_address(tmp_path):
    environ = {**GOOD, "OPENAI_BASE_URL": "https://127.0.0.1:9999/v1", "STRIPE_API_BASE": "https://localhost:8443",
               "GOOGLE_TOKEN_URL": "https://idp.localhost/token", "PUBLIC_BASE_URL": "https://localhost"}
    with pytest.raises(ConfigError) as caught:
        load(environ, tmp_path=tmp_path)
    text = str(caught.value)
    for name in ("OPENAI_BASE_URL", "STRIPE_API_BASE", "GOOGLE_TOKEN_URL", "PUBLIC_BASE_URL"):
        assert f"{name} points at this machine" in text, text
    assert len(caught.value.problems) == 4
    assert load({"APP_MODE": "test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, tmp_path=tmp_path)
