// Why a peer connection cannot carry a call, in words a person can act on (issue #11: "the
// page tells the truth"). One watch per RTCPeerConnection, created with it and stopped when
// the page closes it; the page decides what to show and offers the retry.
//
// Measured in Chromium here: a TURN server that refuses our credentials answers 401 within
// ~0.1 s; a closed TCP port fails at once (701); an unanswered UDP address reports 701 only
// after ~40 s. A relay-only page therefore gives the relay RELAY_GATHER_TIMEOUT_MS to hand
// out a candidate before it says the relay is unreachable.

export const IceProblem = Object.freeze({
  TURN_REFUSED: "turn_refused", // a TURN server answered with an error (credentials, quota)
  TURN_UNREACHABLE: "turn_unreachable", // relay-only, and no TURN server gave a candidate
  ICE_FAILED: "ice_failed", // candidates were exchanged, but no pair of them connected
});

export const RELAY_GATHER_TIMEOUT_MS = 8000;

const MESSAGES = {
  [IceProblem.TURN_REFUSED]:
    "The call's relay server (TURN) refused the connection, so your media cannot get through. "
    + "This is a server setting: tell whoever runs Parley.",
  [IceProblem.TURN_UNREACHABLE]:
    "The call's relay server (TURN) cannot be reached from your network, and this call "
    + "needs it. Check your connection, or try another network.",
  [IceProblem.ICE_FAILED]:
    "Your media could not get through: a firewall or network between you and the other "
    + "side blocks the call.",
};

export function iceProblemMessage(problem) {
  return MESSAGES[problem] || "The call could not connect.";
}

const isTurnUrl = (url) => /^turns?:/i.test(url || "");

// Watch `pc` and call `onProblem(problem, detail)` once a problem is certain, and
// `onProblem(null)` if the connection connects after all. `relayOnly`: the page uses
// iceTransportPolicy "relay" (only TURN candidates count). Returns a function that stops
// the watch (its timer and handlers); closing `pc` also ends it.
export function watchIce(pc, { relayOnly, onProblem }) {
  const turnErrors = [];
  let relayCandidates = 0;
  let reported = null;
  let timer = null;

  const report = (problem) => {
    if (problem === reported) return;
    reported = problem;
    const last = turnErrors[turnErrors.length - 1];
    onProblem(problem, last ? `${last.url}: ${last.errorCode} ${last.errorText}` : "");
  };
  const turnProblem = () => (turnErrors.some(({ errorCode }) => errorCode >= 300
    && errorCode < 700) ? IceProblem.TURN_REFUSED : IceProblem.TURN_UNREACHABLE);
  const checkRelay = () => {
    if (relayOnly && relayCandidates === 0 && pc.connectionState !== "closed") {
      report(turnProblem());
    }
  };

  const onCandidate = ({ candidate }) => {
    if (candidate && candidate.type === "relay") relayCandidates += 1;
  };
  const onCandidateError = (event) => {
    if (isTurnUrl(event.url)) {
      turnErrors.push({ url: event.url, errorCode: event.errorCode, errorText: event.errorText });
    }
  };
  const onGathering = () => {
    if (pc.iceGatheringState === "gathering" && relayOnly && timer === null) {
      timer = setTimeout(checkRelay, RELAY_GATHER_TIMEOUT_MS);
    }
    if (pc.iceGatheringState === "complete") checkRelay();
  };
  const onState = () => {
    if (pc.connectionState === "connected") {
      report(null);
    } else if (pc.connectionState === "failed") {
      report(relayCandidates === 0 && (relayOnly || turnErrors.length)
        ? turnProblem() : IceProblem.ICE_FAILED);
    } else if (pc.connectionState === "closed") {
      stop();
    }
  };

  function stop() {
    clearTimeout(timer);
    pc.removeEventListener("icecandidate", onCandidate);
    pc.removeEventListener("icecandidateerror", onCandidateError);
    pc.removeEventListener("icegatheringstatechange", onGathering);
    pc.removeEventListener("connectionstatechange", onState);
  }
  pc.addEventListener("icecandidate", onCandidate);
  pc.addEventListener("icecandidateerror", onCandidateError);
  pc.addEventListener("icegatheringstatechange", onGathering);
  pc.addEventListener("connectionstatechange", onState);
  return stop;
}
