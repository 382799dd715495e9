"""--ref is resolved unambiguously: a tag stays a tag, a sha stays that commit.

A full name (refs/heads/NAME, refs/tags/NAME) says which; a short name that is
both a branch and a tag is an error the first time it is resolved.
"""

from __future__ import annotations

from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, ServerFactory, values


def _app(chunk_size: int) -> dict[str, str]:
    return {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", f"chunk_size: {chunk_size}")}


async def test_a_tag_stays_a_tag_when_a_branch_of_its_name_is_pushed(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    tagged = config_repo.commit_files(_app(111), "release 1")
    config_repo.git("tag", "release-1")
    server = await start_server(config_repo.path, ref="release-1")
    assert server.served_sha == tagged
    config_repo.git("checkout", "-q", "-b", "release-1")
    branch = config_repo.commit_files(_app(222), "a branch named like the tag")
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert (record.result, server.served_sha) == ("unchanged", tagged)
    assert branch != tagged
    assert values((await server.config())[1])["chunk_size"] == 111


async def test_a_short_name_that_is_both_is_an_error_and_full_names_choose(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    tagged = config_repo.commit_files(_app(111), "tagged")
    config_repo.git("tag", "release-1")
    config_repo.git("checkout", "-q", "-b", "release-1")
    branch = config_repo.commit_files(_app(222), "branch")
    ambiguous = await start_server(config_repo.path, ref="release-1")
    assert ambiguous.served_sha is None
    error = (await ambiguous.status())["last_sync"]["error"]
    assert "ref 'release-1' is both a branch and a tag" in error
    assert "give --ref refs/heads/release-1 or --ref refs/tags/release-1" in error
    as_tag = await start_server(config_repo.path, ref="refs/tags/release-1")
    assert as_tag.served_sha == tagged
    as_branch = await start_server(config_repo.path, ref="refs/heads/release-1")
    assert as_branch.served_sha == branch


async def test_a_sha_stays_that_commit_when_a_branch_is_named_like_it(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    pinned = config_repo.head()
    config_repo.git("checkout", "-q", "-b", pinned)  # a branch named like the sha
    config_repo.commit_files(_app(333), "on the branch named like a sha")
    server = await start_server(config_repo.path, ref=pinned)
    assert server.served_sha == pinned
    assert values((await server.config())[1])["chunk_size"] == 512
