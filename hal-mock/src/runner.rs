//! [`run_vm`]: runs a VM of mock vCPUs to the end, one host thread per vCPU (a vCPU
//! started by CPU up gets its own thread), handing the exits that need a decision to
//! a callback.

use std::sync::{Arc, Mutex};

use addrspace::NestedFormat;
use vm_core::{Vm, VmError, VmExit, VmState};

use crate::machine::Machine;
use crate::vcpu::MockVCpu;

/// What to do after an exit the callback saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the vCPU again as it is.
    Resume,
    /// Set the call's return value, then run again.
    Return(u64),
    /// Skip the unserved access, then run again.
    Skip,
    /// Give the unserved load this value, then run again.
    Complete(u64),
    /// Shut the VM down.
    Stop,
}

/// The exit callback of [`run_vm`].
pub type OnExit<'a, F> = dyn Fn(&Vm<MockVCpu<F>>, usize, &VmExit) -> Action + Sync + 'a;

/// What happened during a run.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Every exit returned by `run_vcpu`, with its vCPU, in the order seen per vCPU.
    pub exits: Vec<(usize, VmExit)>,
    /// Errors (from `run_vcpu` or the follow-up calls), with their vCPU.
    pub errors: Vec<(usize, VmError)>,
    /// vCPUs that ran.
    pub vcpus_run: Vec<usize>,
}

impl RunReport {
    /// How many exits matched `pred`.
    pub fn count(&self, pred: impl Fn(&VmExit) -> bool) -> usize {
        self.exits.iter().filter(|(_, e)| pred(e)).count()
    }
}

/// Runs `vm` (booting it if it is still `Created`) until every vCPU thread has
/// ended: on shutdown, reset, stop, CPU down, an error, or [`Action::Stop`]. vCPU
/// `i` runs on physical CPU `pcpu_base + i` of `machine`. `on_exit` decides on
/// hypercalls, unserved accesses, halts, refused CPU ups, port and system-register
/// exits and external interrupts; CPU up, shutdown and pause are handled here.
pub fn run_vm<F: NestedFormat>(
    machine: &Arc<Machine>,
    vm: &Arc<Vm<MockVCpu<F>>>,
    pcpu_base: usize,
    on_exit: impl Fn(&Vm<MockVCpu<F>>, usize, &VmExit) -> Action + Sync,
) -> RunReport {
    let report = Mutex::new(RunReport::default());
    if vm.state() == VmState::Created {
        let _g = machine.enter(pcpu_base);
        if let Err(e) = vm.boot() {
            report.lock().expect("report").errors.push((0, e));
            return report.into_inner().expect("report");
        }
    }
    std::thread::scope(|s| {
        fn vcpu_thread<'s, 'e: 's, F: NestedFormat>(
            s: &'s std::thread::Scope<'s, 'e>,
            machine: &'e Arc<Machine>,
            vm: &'e Arc<Vm<MockVCpu<F>>>,
            pcpu_base: usize,
            vcpu: usize,
            report: &'e Mutex<RunReport>,
            on_exit: &'e OnExit<'e, F>,
        ) {
            s.spawn(move || {
                let _g = machine.enter(pcpu_base + vcpu);
                report.lock().expect("report").vcpus_run.push(vcpu);
                let fail = |e: VmError| {
                    report.lock().expect("report").errors.push((vcpu, e));
                    let _ = vm.shutdown();
                };
                loop {
                    let exit = match vm.run_vcpu(vcpu) {
                        Ok(exit) => exit,
                        // Another thread stopped the VM between two runs: the end.
                        Err(VmError::State {
                            state: VmState::Stopped,
                            ..
                        }) => break,
                        Err(e) => {
                            fail(e);
                            break;
                        }
                    };
                    report
                        .lock()
                        .expect("report")
                        .exits
                        .push((vcpu, exit.clone()));
                    match &exit {
                        VmExit::CpuUp { target, .. } => {
                            vcpu_thread(s, machine, vm, pcpu_base, *target, report, on_exit);
                            continue;
                        }
                        VmExit::Shutdown | VmExit::Reset | VmExit::Stopped | VmExit::CpuDown => {
                            break;
                        }
                        VmExit::Paused => {
                            while vm.state() == VmState::Paused {
                                std::thread::yield_now();
                            }
                            continue;
                        }
                        _ => {}
                    }
                    let done = match on_exit(vm, vcpu, &exit) {
                        Action::Resume => Ok(()),
                        Action::Return(v) => vm.set_return_value(vcpu, v),
                        Action::Skip => vm.skip_access(vcpu),
                        Action::Complete(v) => vm.complete_access(vcpu, Some(v)),
                        Action::Stop => {
                            let _ = vm.shutdown();
                            break;
                        }
                    };
                    if let Err(e) = done {
                        fail(e);
                        break;
                    }
                }
            });
        }
        vcpu_thread(s, machine, vm, pcpu_base, 0, &report, &on_exit);
    });
    report.into_inner().expect("report")
}
