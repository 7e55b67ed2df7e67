"""The Dataflow recipe, checked as far as this machine allows: Beam's DataflowRunner builds the whole job request
(options, the pipeline, the staged laionprep wheel) in its dry-run mode, which returns before contacting Google
Cloud — nothing is submitted and no network is used."""
from __future__ import annotations

import os
import zipfile

import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, StandardOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.runners.runner import PipelineState

from laionprep.errors import UsageError
from laionprep.sharding import ReshardConfig, build_pipeline, prepare
from laionprep.sharding.worker import WriteShardFn


def test_dataflow_job_ships_the_package_without_submitting(demo_download, tmp_path):
    out = "gs://laionprep-example-bucket/resharded/laion_demo"
    cfg = ReshardConfig(sources=(demo_download,), output=out, name="laion_demo", num_shards=2, min_side=64,
                        beam_args=("--runner", "DataflowRunner", "--project", "my-project", "--region", "europe-west4",
                                   "--temp_location", "gs://laionprep-example-bucket/tmp", "--dry_run=True"))
    prep = prepare(cfg)
    pipeline, opts = build_pipeline(prep, wheel_dir=str(tmp_path / "ship"))

    assert isinstance(pipeline.runner, DataflowRunner)
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gco = opts.view_as(GoogleCloudOptions)
    assert (gco.project, gco.region, gco.temp_location) == ("my-project", "europe-west4",
                                                             "gs://laionprep-example-bucket/tmp")
    setup = opts.view_as(SetupOptions)
    assert setup.save_main_session is False
    [wheel] = setup.extra_packages
    assert os.path.basename(wheel).startswith("laionprep-") and wheel.endswith(".whl")
    names = zipfile.ZipFile(wheel).namelist()
    for mod in ("sharding/worker", "sharding/records", "tfrecord", "sharding/plan", "keylist",
                "sharding/pipeline"):
        assert f"laionprep/{mod}.py" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "Requires-Dist: apache-beam" in meta

    result = pipeline.run()  # --dry_run: the job request is built, then the runner returns without submitting
    assert result.state == PipelineState.DONE
    assert result.job.proto.type_.name == "JOB_TYPE_BATCH"
    proto = pipeline.runner.proto_pipeline
    staged = [beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
              for env in proto.components.environments.values() for d in env.dependencies]
    assert os.path.basename(wheel) in staged and "extra_packages.txt" in staged
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Plan", "Distribute", "WriteShards"} <= names
    [pardo] = [t for t in proto.components.transforms.values()
               if t.unique_name.startswith("WriteShards") and t.spec.urn == "beam:transform:pardo:v1"]
    fn = pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(pardo.spec.payload).do_fn.payload)[0]
    assert isinstance(fn, WriteShardFn)
    assert fn.job.output == out and fn.job.num_shards == 2 and fn.job.filters.min_side == 64
    # no Group-by-key over records anywhere: the only shuffle is Reshuffle of the (tiny) task list
    gbks = [t.unique_name for t in proto.components.transforms.values()
            if t.spec.urn == "beam:transform:group_by_key:v1"]
    assert all(n.startswith("Distribute") for n in gbks)


def test_dataflow_refuses_local_paths(demo_download):
    cfg = ReshardConfig(sources=(demo_download,), output="gs://laionprep-example-bucket/out", name="x",
                        beam_args=("--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/t"))
    with pytest.raises(UsageError, match="cannot read or write local paths"):
        prepare(cfg)
