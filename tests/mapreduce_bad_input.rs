//! Bad input (issue 7, "Bad input"): an unreadable input file, a crashing `exec` app and a
//! malformed record each make the job report which task failed and why, re-run it a bounded
//! number of times (3 by default), and then fail with a clear error and exit code 1, within a
//! bound of time, instead of looping or hanging.

mod mapreduce_support;

use std::process::Command;
use std::time::Duration;

use mapreduce_support::{exe, wait_for, MrJob};

/// Runs `mr run` with one worker of 2 cores on `inputs` plus `args`; returns (exit code,
/// stdout + stderr, the JSON report).
fn run_job(job: &MrJob, inputs: &[String], args: &[&str]) -> (i32, String, serde_json::Value) {
    let report = job.dir.join("report.json");
    let mut command = Command::new(exe());
    command
        .args([
            "mr",
            "run",
            "--workers",
            "1",
            "--cores-per-worker",
            "2",
            "--no-progress",
        ])
        .arg("--work-dir")
        .arg(job.work_dir())
        .arg("--output")
        .arg(job.output_dir())
        .arg("--report")
        .arg(&report)
        .arg("--slots-dir")
        .arg(job.dir.join("slots"))
        .args(args);
    for input in inputs {
        command.args(["--input", input]);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mr run");
    let status = wait_for(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the job neither finished nor failed within 30 s")
    });
    let output = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report =
        serde_json::from_slice(&std::fs::read(&report).expect("a report")).expect("a JSON report");
    (status.code().unwrap_or(-1), text, report)
}

fn assert_failed_clearly(code: i32, text: &str, report: &serde_json::Value, needles: &[&str]) {
    assert_eq!(code, 1, "{text}");
    assert_eq!(report["status"], "failed", "{report}");
    let error = report["error"].as_str().expect("an error");
    assert!(error.contains("failed after 3 attempts"), "{error}");
    for needle in needles {
        assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        assert!(
            text.contains(needle),
            "the summary lacks {needle:?}: {text}"
        );
    }
    // Each attempt's reason is in the report.
    assert!(report["stats"]["failures"].as_array().unwrap().len() >= 3);
}

/// An input the workers cannot read (here a folder named like a text file) fails its map task
/// three times, then the job, naming the file and the reason.
#[test]
fn an_unreadable_input_fails_the_job_naming_it() {
    let job = MrJob::new("unreadable", 11, 4);
    let bad = job.dir.join("in").join("bad.txt");
    std::fs::create_dir_all(&bad).unwrap();
    let inputs = [format!("{}/*.txt", job.dir.join("in").display())];
    let (code, text, report) = run_job(&job, &inputs, &["--app", "wc", "--reduces", "2"]);
    assert_failed_clearly(code, &text, &report, &["map task 0", "bad.txt"]);
}

/// An `exec` map that exits non-zero fails with its status and the end of its stderr.
#[test]
fn a_crashing_exec_app_fails_the_job_with_its_stderr() {
    let job = MrJob::new("crashing-exec", 12, 4);
    let map = job.script(
        "map.sh",
        "cat > /dev/null\necho 'boom: bad day' >&2\nexit 3",
    );
    let reduce = job.script("reduce.sh", "cat");
    let args = ["--app", "exec", "--app-arg", &map, "--app-arg", &reduce];
    let (code, text, report) = run_job(&job, &job.inputs.clone(), &args);
    assert_failed_clearly(code, &text, &report, &["exit status: 3", "boom: bad day"]);
}

/// A record that is not UTF-8 text is malformed for wc: the error names the byte offset.
#[test]
fn a_malformed_record_fails_the_job_naming_the_offset() {
    let job = MrJob::new("malformed", 13, 4);
    let bad = job.dir.join("bad-input");
    std::fs::write(&bad, b"good words here\nthen \xff\xfe garbage\n").unwrap();
    let inputs = [bad.to_str().unwrap().to_string()];
    let (code, text, report) = run_job(&job, &inputs, &["--app", "wc", "--reduces", "2"]);
    assert_failed_clearly(code, &text, &report, &["invalid UTF-8 at byte offset 21"]);
}
