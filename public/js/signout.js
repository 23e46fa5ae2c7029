// The sign-out page: "Also remove my images from this browser" deletes every batch and image kept here
// for the subscriber before the form signs them out; if that fails, it says so and does not sign out.
import {forget} from './store.js';

const $ = id => document.getElementById(id);
const root = $('signout');

if (root) {
  const form = $('signout-form'), box = $('signout-remove'), button = $('signout-button'), error = $('signout-error');
  $('signout-choice').hidden = false;
  form.addEventListener('submit', async event => {
    if (!box.checked) return; // a plain sign-out
    event.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      await forget((root.dataset.batchIds || '').split(' ').filter(Boolean).map(Number));
    } catch {
      error.textContent = root.dataset.tFailed;
      error.hidden = false;
      button.disabled = false;
      return;
    }
    form.submit(); // no submit event: straight to POST /logout
  });
}
