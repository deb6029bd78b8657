package node

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// chromiumPath returns the Chromium to drive, or "" when none is installed.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// xq quotes s as an XPath string literal.
func xq(s string) string {
	if !strings.Contains(s, `"`) {
		return `"` + s + `"`
	}
	return `'` + s + `'`
}

// The selectors below pick the first match only: chromedp waits until every node a
// selector matches is visible, and a page may hold hidden ones (unused image slots).

// byLabel selects the form control whose visible label starts with label, as a person
// finds it.
func byLabel(label string) string {
	return fmt.Sprintf(`(//*[@id=//label[starts-with(normalize-space(.), %s)]/@for])[1]`, xq(label))
}

// byButton selects the button named name: its text, or an aria-label "name (…)" that adds
// a count.
func byButton(name string) string {
	return fmt.Sprintf(`(//button[normalize-space(.)=%[1]s or starts-with(@aria-label, concat(%[1]s, " ("))])[1]`, xq(name))
}

// byLink selects the link named name the same way.
func byLink(name string) string {
	return fmt.Sprintf(`(//a[normalize-space(.)=%[1]s or starts-with(@aria-label, concat(%[1]s, " ("))])[1]`, xq(name))
}

// byText selects an element of kind whose text contains text.
func byText(kind, text string) string {
	return fmt.Sprintf(`(//%s[contains(., %s)])[1]`, kind, xq(text))
}

// testPNG writes a striped PNG to dir and returns its path. Its noise makes it about
// 2.9 MB, three times what an image may be, so the page must shrink it before sending.
func testPNG(t *testing.T, dir string) string {
	const w, h = 1200, 800
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	noise := rand.New(rand.NewPCG(1, 2))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: uint8(x * 200 / w), G: 90, B: uint8(y * 200 / h), A: 255}
			if (x/150+y/150)%2 == 0 {
				c.G = 200
			}
			c.R += uint8(noise.IntN(50))
			c.G += uint8(noise.IntN(50))
			c.B += uint8(noise.IntN(50))
			img.Set(x, y, c)
		}
	}
	p := filepath.Join(dir, "pattern.png")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if st, err := f.Stat(); err != nil || st.Size() <= 1_000_000 {
		t.Fatalf("test image is %v bytes (%v), want over the 1 MB limit", st.Size(), err)
	}
	return p
}

// TestWebUIBrowser drives the web UI in a real Chromium: two people sign up, one posts an
// image with a description, the other follows, likes and replies, and the first sees the
// notifications. Screenshots of the main pages go to $AERIE_ARTIFACTS (or a temp dir).
func TestWebUIBrowser(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath()
	if chromium == "" {
		t.Skip("no chromium binary found (apt-get install chromium)")
	}
	_, base := testNode(t)
	artifacts := os.Getenv("AERIE_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o750); err != nil {
		t.Fatal(err)
	}
	picture := testPNG(t, t.TempDir())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 900),
	)
	defer cancelAlloc()
	alice, cancelAlice := chromedp.NewContext(allocCtx)
	defer cancelAlice()

	do := func(who context.Context, step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(who, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	shot := func(who context.Context, name string) {
		t.Helper()
		b, err := chromedp.Run(who, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(artifacts, name+".png")
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
	signUp := func(who context.Context, name string) {
		t.Helper()
		do(who, "sign up "+name,
			chromedp.Navigate(base+"/signup"),
			chromedp.SendKeys(byLabel("Handle"), name),
			chromedp.SendKeys(byLabel("Password"), "password-"+name),
			chromedp.Click(byButton("Create account")),
			chromedp.WaitVisible(byLabel("What's up?")),
		)
	}

	signUp(alice, "alice")
	// Bob browses in a separate browser context: his own cookies.
	bob, cancelBob := chromedp.NewContext(alice, chromedp.WithNewBrowserContext())
	defer cancelBob()
	signUp(bob, "bob")

	// Alice posts a picture with a description; the counter counts down as she types.
	text := "First light over the hills"
	do(alice, "write a post",
		chromedp.SendKeys(byLabel("What's up?"), text),
		chromedp.WaitVisible(byText("span", fmt.Sprintf("%d characters left", 300-len(text)))),
		chromedp.SetUploadFiles(byLabel("Add images"), []string{picture}),
		chromedp.SendKeys(byLabel("Image description"), "Stripes of red and blue"),
	)
	shot(alice, "compose")
	do(alice, "send the post",
		chromedp.Click(byButton("Post")),
		chromedp.WaitVisible(`//article//img[@alt="Stripes of red and blue"]`),
	)
	// The thumbnail comes from the node's image server, under the page's CSP.
	do(alice, "load the image", chromedp.Poll[chromedp.Void](`document.querySelector("article .images img").naturalWidth > 0`,
		chromedp.WithPollingTimeout(10*time.Second)))
	shot(alice, "home")

	// Bob follows Alice from her profile and sees her post on his timeline.
	do(bob, "follow alice",
		chromedp.Navigate(base+"/profile/alice.test"),
		chromedp.Click(byButton("Follow")),
		chromedp.WaitVisible(byButton("Unfollow")),
	)
	shot(bob, "profile")
	do(bob, "like and reply",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(byText("div", text)),
		// Like and repost update the post in place, without loading a page.
		chromedp.Evaluate[chromedp.Void](`window.samePage = true`),
		chromedp.Click(byButton("Like")),
		chromedp.WaitVisible(`//button[@aria-label="Like (1 like)" and @aria-pressed="true"]`),
		chromedp.Click(byButton("Repost")),
		chromedp.WaitVisible(`//button[@aria-label="Repost (1 repost)" and @aria-pressed="true"]`),
		chromedp.Poll[chromedp.Void](`window.samePage === true`, chromedp.WithPollingTimeout(time.Second)),
		chromedp.Click(byLink("Reply")),
		chromedp.SendKeys(byLabel("Write your reply"), "Lovely colours!"),
		chromedp.Click(byButton("Reply")),
		chromedp.WaitVisible(`//div[@class="reply"]//div[contains(., "Lovely colours!")]`),
	)
	shot(bob, "thread")
	do(bob, "search", chromedp.Navigate(base+"/search?q=hills"), chromedp.WaitVisible(byText("div", text)))
	shot(bob, "search")

	// Alice sees what Bob did.
	do(alice, "notifications",
		chromedp.Navigate(base+"/notifications"),
		chromedp.WaitVisible(byText("li", "followed you")),
		chromedp.WaitVisible(byText("li", "liked your post")),
		chromedp.WaitVisible(byText("li", "replied to your post")),
	)
	shot(alice, "notifications")
	do(alice, "settings", chromedp.Navigate(base+"/settings"), chromedp.WaitVisible(byLabel("App password name")))
	shot(alice, "settings")
	do(alice, "phone-sized timeline", chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(byLabel("What's up?")))
	shot(alice, "home-phone")
	dark := emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}
	if _, err := chromedp.Call(alice, emulation.SetEmulatedMedia, dark); err != nil {
		t.Fatalf("emulate dark mode: %v", err)
	}
	do(alice, "dark profile", chromedp.Navigate(base+"/profile/alice.test"), chromedp.WaitVisible(byLink("Edit profile")))
	shot(alice, "profile-phone-dark")
}
