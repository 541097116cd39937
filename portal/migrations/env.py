import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging.
# This line sets up loggers basically.
# Keep the loggers that already exist (the portal's own): by default fileConfig disables them,
# which silenced every error logged after an in-process `upgrade()` (as `make run` does).
fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")


def get_engine():
    return current_app.extensions["migrate"].db.engine


def get_engine_url():
    return get_engine().url.render_as_string(hide_password=False).replace("%", "%%")


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option("sqlalchemy.url", get_engine_url())
target_db = current_app.extensions["migrate"].db

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.


def get_metadata():
    if hasattr(target_db, "metadatas"):
        return target_db.metadatas[None]
    return target_db.metadata


def render_item(type_, obj, autogen_context):
    """Render the portal's UTC timestamp type as the plain column type it stores."""
    from portal.core.models import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline():
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    url = config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=get_metadata(), literal_binds=True)

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """

    # this callback is used to prevent an auto-migration from being generated
    # when there are no changes to the schema
    # reference: http://alembic.zzzcomputing.com/en/latest/cookbook.html
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")

    conf_args = current_app.extensions["migrate"].configure_args
    conf_args.setdefault("render_item", render_item)
    conf_args.setdefault("compare_type", True)
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()

    with connectable.connect() as connection:
        # SQLite: batch mode rebuilds a table by copying it and dropping the original, and with
        # foreign keys enforced that DROP deletes (ON DELETE CASCADE) or refuses (RESTRICT) the
        # rows of every table that refers to it. So foreign keys are off while the migrations
        # run (the pragma is ignored inside a transaction: it is set outside one), and each step
        # is checked instead: one that leaves a row referring to nothing is rolled back.
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, "OFF")
        checked = {"on_version_apply": _foreign_keys_intact} if sqlite else {}
        try:
            context.configure(
                connection=connection,
                target_metadata=get_metadata(),
                **{**conf_args, **checked},
            )

            with context.begin_transaction():
                context.run_migrations()
        finally:
            if sqlite:
                connection.rollback()
                _sqlite_foreign_keys(connection, "ON")


def _sqlite_foreign_keys(connection, state):
    """Turn SQLite's foreign-key enforcement on or off, outside any transaction."""
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys = {state}")


def _foreign_keys_intact(ctx, step, heads, run_args):
    """After each migration step, in its transaction: refuse it if a row refers to nothing."""
    broken = ctx.connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(
            f"The migration to {', '.join(sorted(heads)) or 'base'} would leave rows whose "
            f"foreign keys point nowhere (table, rowid, referred table, key): {broken[:10]}"
        )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
