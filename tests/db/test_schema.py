"""Migrations up, down and up again on SQLite and PostgreSQL; serve refuses an old schema."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, inspect, select
from sqlalchemy.exc import DBAPIError

import migrations
from bot.assembly import build_bot
from bot.db import schema
from bot.db.audit import SqlAuditTrail
from bot.db.engine import create_engine, sessionmaker
from bot.db.models import AuditEntry, Operation
from bot.errors import SchemaOutOfDate
from bot.invocation import Invocation
from bot.sandbox.world import Sandbox

from ..conftest import sandbox_settings


async def tables(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names


def test_the_head_a_serving_bot_expects_is_alembics() -> None:
    import migrations

    assert schema.head_revision() == migrations.HEAD


async def test_up_down_up(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await schema.current_revision(engine) is None
        await schema.upgrade(engine)
        assert await schema.current_revision(engine) == schema.head_revision()
        assert "audit_entries" in await tables(database_url)
        await schema.downgrade(engine, "base")
        assert await schema.current_revision(engine) is None
        assert "audit_entries" not in await tables(database_url)
        await schema.upgrade(engine)
        await schema.ensure_current(engine)
    finally:
        await engine.dispose()


async def test_audit_round_trip_keeps_utc(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    trail = SqlAuditTrail(sessionmaker(engine))
    at = datetime(2026, 11, 26, 3, 0, 5, tzinfo=UTC)
    await trail.record_command(
        Invocation(user_id="U1", text="status", channel_id="C1", received_at=at),
        "ok",
        "fine",
        None,
        0.2,
    )
    [row] = await trail.recent()
    assert (row.user_id, row.text, row.outcome, row.at) == ("U1", "status", "ok", at)
    async with sessionmaker(engine)() as session:
        assert (await session.scalar(select(AuditEntry.detail))) == "fine"
    await engine.dispose()


async def test_serve_refuses_an_unmigrated_database(world: Sandbox, database_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="run `failover-bot migrate` first"):
        await build_bot(sandbox_settings(world, database_url))


async def test_serve_refuses_an_older_schema(world: Sandbox, migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'zzzz'")
    await engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="at zzzz, which this bot does not know"):
        await build_bot(sandbox_settings(world, migrated_url))


async def test_serve_refuses_a_schema_one_revision_behind(
    world: Sandbox, database_url: str
) -> None:
    engine = create_engine(database_url)
    await schema.upgrade(engine, "0001")
    await engine.dispose()
    with pytest.raises(
        SchemaOutOfDate,
        match=f"schema is at 0001 but this bot needs {migrations.HEAD}: run `failover-bot migrate`",
    ):
        await build_bot(sandbox_settings(world, database_url))


async def test_downgrade_keeps_the_tables_it_does_not_drop(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await schema.upgrade(engine)
        trail = SqlAuditTrail(sessionmaker(engine))
        for n in range(3):
            await trail.record_command(
                Invocation(user_id=f"U{n}", text="status"), "ok", "", None, 0.1
            )
        await schema.downgrade(engine, "0001")  # drops the watch's and the operations' tables
        assert {"incidents", "operations"}.isdisjoint(await tables(database_url))
        await schema.upgrade(engine)
        assert [r.user_id for r in reversed(await trail.recent())] == ["U0", "U1", "U2"]
    finally:
        await engine.dispose()


async def test_a_drill_waiting_for_its_driver_is_starting_after_the_upgrade(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        await schema.upgrade(engine, "0003")
        async with engine.begin() as conn:
            for n, kind in enumerate(("drill", "drain"), start=1):
                await conn.exec_driver_sql(
                    "INSERT INTO operations (id, kind, region, state, requested_by, reason, "
                    "break_glass, created_at, updated_at, channel, detail) VALUES "
                    f"({n}, '{kind}', 'eu-west', 'applying', 'U1', 'r', '[]', "
                    "'2026-12-02 10:00:00', '2026-12-02 10:00:00', 'C1', '{}')"
                )
        await schema.upgrade(engine)
        async with sessionmaker(engine)() as session:
            states = {o.kind: o.state for o in await session.scalars(select(Operation))}
        assert states == {"drill": "starting", "drain": "applying"}
        await schema.downgrade(engine, "0003")
        async with engine.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT kind, state FROM operations")).all()
        assert sorted(rows) == [("drain", "applying"), ("drill", "applying")]
    finally:
        await engine.dispose()


async def test_concurrent_commands_lose_no_audit_rows(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    trail = SqlAuditTrail(sessionmaker(engine))
    try:
        await asyncio.gather(
            *(
                trail.record_command(
                    Invocation(user_id=f"U{n}", text=f"status {n}"), "ok", "", None, 0.0
                )
                for n in range(60)
            )
        )
        rows = await trail.recent(limit=100)
        assert sorted(r.text for r in rows) == sorted(f"status {n}" for n in range(60))
    finally:
        await engine.dispose()


async def test_concurrent_commands_share_transactions(migrated_url: str) -> None:
    """200 commands at once are not 200 transactions (SQLite serialises them, and refused
    the late ones with "database is locked")."""
    engine = create_engine(migrated_url)
    commits: list[object] = []
    event.listen(engine.sync_engine, "commit", commits.append)
    trail = SqlAuditTrail(sessionmaker(engine))
    try:
        await asyncio.gather(
            *(
                trail.record_command(Invocation(user_id="U1", text=f"s {n}"), "ok", "", None, 0)
                for n in range(200)
            )
        )
        assert len(await trail.recent(limit=300)) == 200
        assert len(commits) < 20
    finally:
        await engine.dispose()


async def test_a_failed_audit_write_reaches_every_caller_of_its_batch(
    migrated_url: str,
) -> None:
    engine = create_engine(migrated_url)
    trail = SqlAuditTrail(sessionmaker(engine))
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE audit_entries")
        results = await asyncio.gather(
            *(
                trail.record_command(Invocation(user_id="U1", text=f"s {n}"), "ok", "", None, 0)
                for n in range(5)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, DBAPIError) for r in results)
    finally:
        await engine.dispose()
