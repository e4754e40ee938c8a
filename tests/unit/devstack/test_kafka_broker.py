"""Pure parts of the dev Kafka broker: rendered config, paths, pid/port handling (no JVM started)."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack import kafka_broker as kb


def _props(text: str) -> dict[str, str]:
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


@pytest.fixture
def cfg(tmp_path: Path) -> kb.BrokerConfig:
    return kb.BrokerConfig(
        cache_dir=tmp_path / "cache", state_dir=tmp_path / "state", port=29092, controller_port=29093
    )


def test_defaults_and_paths() -> None:
    cfg = kb.BrokerConfig()
    assert cfg.bootstrap == "127.0.0.1:9092"
    assert cfg.lib_dir == Path.home() / ".cache" / "sentinel" / "kafka-4.1.1" / "lib"
    assert cfg.data_dir == Path("var/kafka/data")
    assert cfg.pid_file == Path("var/kafka/broker.pid")
    assert cfg.log_file == Path("var/kafka/broker.log")


def test_absolute_pins_relative_dirs_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = kb.absolute(kb.BrokerConfig(cache_dir=Path("c")))
    assert cfg.state_dir == tmp_path / "var" / "kafka"
    assert cfg.cache_dir == tmp_path / "c"


def test_server_properties(cfg: kb.BrokerConfig) -> None:
    props = _props(kb.render_server_properties(cfg))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert props["log.dirs"] == str(cfg.data_dir)
    assert props["auto.create.topics.enable"] == "true"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_log4j_config_quiets_kafka_but_keeps_milestones() -> None:
    text = kb.render_log4j_config()
    assert "rootLogger.level = INFO" in text
    names = dict(re.findall(r"logger\.(\w+)\.name = (\S+)", text))
    levels = dict(re.findall(r"logger\.(\w+)\.level = (\S+)", text))
    by_name = {name: levels[key] for key, name in names.items()}
    assert by_name["org.apache.kafka"] == "WARN"
    assert by_name["kafka"] == "WARN"
    assert by_name["kafka.server.KafkaRaftServer"] == "INFO"


def test_pom_and_java_command(cfg: kb.BrokerConfig) -> None:
    pom = kb.render_pom(cfg)
    assert "<artifactId>kafka_2.13</artifactId>" in pom and f"<version>{cfg.version}</version>" in pom
    assert f"<version>{kb.LOG4J_VERSION}</version>" in pom
    cmd = kb.java_command(cfg)
    assert cmd[1] == "-Xmx512m"
    assert f"-Dlog4j2.configurationFile={cfg.log4j_file}" in cmd
    assert cmd[-3:] == [str(cfg.lib_dir / "*"), "kafka.Kafka", str(cfg.properties_file)]


def test_cluster_id_looks_like_kafkas() -> None:
    ids = {kb.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)


def test_config_from_env() -> None:
    cfg = kb.config_from_env(
        {"SENTINEL_KAFKA_PORT": "19092", "SENTINEL_KAFKA_STATE_DIR": "/x", "SENTINEL_KAFKA_VERSION": "4.0.0"}
    )
    assert (cfg.port, cfg.controller_port, cfg.state_dir, cfg.version) == (19092, 19093, Path("/x"), "4.0.0")
    assert kb.config_from_env({}) == kb.BrokerConfig()


def test_resolve_libs_is_a_no_op_when_complete(cfg: kb.BrokerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg.lib_dir.mkdir(parents=True)
    (cfg.lib_dir.parent / "COMPLETE").write_text("kafka_2.13-4.1.1.jar\n")

    def no_maven(*_: object) -> None:
        raise AssertionError("maven must not run when the marker exists")

    monkeypatch.setattr(kb, "_run_maven", no_maven)
    assert kb.resolve_libs(cfg) == cfg.lib_dir


def test_resolve_libs_replaces_an_incomplete_dir(cfg: kb.BrokerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg.lib_dir.mkdir(parents=True)  # a leftover without marker
    (cfg.lib_dir / "half.jar").write_text("")

    def fake_maven(_: kb.BrokerConfig, work: Path) -> None:
        (work / "lib").mkdir()
        (work / "lib" / "kafka.jar").write_text("")

    monkeypatch.setattr(kb, "_run_maven", fake_maven)
    assert kb.resolve_libs(cfg) == cfg.lib_dir
    assert sorted(p.name for p in cfg.lib_dir.iterdir()) == ["kafka.jar"]
    assert (cfg.lib_dir.parent / "COMPLETE").read_text() == "kafka.jar\n"
    assert [p.name for p in cfg.cache_dir.iterdir()] == ["kafka-4.1.1"]  # temp dir cleaned up


def test_resolve_libs_failure_leaves_no_partial_dir(cfg: kb.BrokerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_maven(_: kb.BrokerConfig, work: Path) -> None:
        raise kb.BrokerError("Maven could not fetch Kafka.")

    monkeypatch.setattr(kb, "_run_maven", failing_maven)
    with pytest.raises(kb.BrokerError):
        kb.resolve_libs(cfg)
    assert list(cfg.cache_dir.iterdir()) == []


def test_status_and_down_when_nothing_runs(cfg: kb.BrokerConfig) -> None:
    cfg.state_dir.mkdir()
    cfg.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker: must not be trusted
    st = kb.status(cfg)
    assert (st.running, st.pid, st.answering) == (False, None, False)
    assert st.bootstrap == "127.0.0.1:29092" and "not running" in st.message
    assert kb.down(cfg) is False
    assert not cfg.pid_file.exists()


@pytest.fixture
def listener(cfg: kb.BrokerConfig) -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    sock.listen()
    yield sock
    sock.close()


def test_up_refuses_a_port_used_by_something_else(
    cfg: kb.BrokerConfig, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kb, "ensure_tools", lambda: None)
    monkeypatch.setattr(kb, "resolve_libs", lambda c: c.lib_dir)
    with pytest.raises(kb.BrokerError, match=r"Port 127\.0\.0\.1:29092 is already used by another process"):
        kb.up(cfg, timeout=5)


def test_ensure_tools_explains_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _: None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(kb.BrokerError, match="Install a JDK 17"):
        kb.ensure_tools()


def test_main_usage() -> None:
    assert kb.main(["sideways"]) == 2


def test_dataclasses_are_frozen(cfg: kb.BrokerConfig) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]


async def test_status_works_inside_an_event_loop(cfg: kb.BrokerConfig) -> None:
    assert kb.status(cfg).answering is False  # no "asyncio.run() cannot be called from a running loop"


def test_maven_errors_keep_the_cause_only() -> None:
    out = "\x1b[0m[ERROR] Failed: no kafka_2.13:jar:9.9.9\n[ERROR] \n[ERROR] Re-run with -e\n\x1b[0m"
    assert kb._maven_errors(out) == "[ERROR] Failed: no kafka_2.13:jar:9.9.9"
